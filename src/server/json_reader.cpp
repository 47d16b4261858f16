#include "server/json_reader.h"

#include <vector>

namespace greta::server {

using nlohmann::json;

namespace {

// A field name as it may appear in an error message: printable ASCII, bounded length.
std::string printable_key(const std::string& k) {
  constexpr size_t kMaxShown = 40;
  std::string out;
  for (size_t i = 0; i < k.size() && i < kMaxShown; ++i) out += (k[i] >= 0x20 && k[i] < 0x7f) ? k[i] : '?';
  if (k.size() > kMaxShown) out += "...";
  return out;
}

// Builds the value iteratively (nlohmann's parser keeps its own stack, and so does this), and
// refuses to open a container below max_depth.
class BoundedBuilder : public nlohmann::json_sax<json> {
 public:
  explicit BoundedBuilder(int max_depth) : max_depth_(max_depth) {}
  json result() { return std::move(root_); }

  bool null() override { return add(json(nullptr)); }
  bool boolean(bool v) override { return add(json(v)); }
  bool number_integer(number_integer_t v) override { return add(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return add(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return add(json(v)); }
  bool string(string_t& v) override { return add(json(std::move(v))); }
  bool binary(binary_t& v) override { return add(json::binary(std::move(v))); }
  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    stack_.back().key = k;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    const std::string field = path();
    if (e.id == 406)  // a number that does not fit a double (1e999) or an integer type
      throw JsonReadError(where(field) + "number out of range (must fit a 64-bit float)", field);
    throw JsonReadError("the request body is not valid JSON (or not valid UTF-8) at byte " +
                            std::to_string(position > 0 ? position - 1 : 0),
                        "");
  }

 private:
  struct Frame {
    json* value;
    std::string key;  // objects: the member being read
  };

  static std::string where(const std::string& field) { return field.empty() ? "" : "'" + field + "': "; }

  // Where the parser is now, e.g. "messages[1].content".
  std::string path() const {
    std::string p;
    for (const Frame& f : stack_) {
      // Appended piece by piece: GCC 12 misreads `"[" + std::to_string(...)` temporaries
      // under -Wrestrict (a false positive that warnings-as-errors builds would stop on).
      if (f.value->is_array()) {
        p += '[';
        p += std::to_string(f.value->size());
        p += ']';
      } else if (!f.key.empty()) {
        if (!p.empty()) p += '.';
        p += printable_key(f.key);
      }
    }
    return p;
  }

  json* place(json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Frame& f = stack_.back();
    if (f.value->is_array()) {
      f.value->push_back(std::move(v));
      return &f.value->back();
    }
    json& slot = (*f.value)[f.key];
    slot = std::move(v);
    return &slot;
  }

  bool add(json v) {
    place(std::move(v));
    return true;
  }

  bool open(json empty) {
    if (int(stack_.size()) >= max_depth_) {
      const std::string field = path();
      throw JsonReadError(where(field) + "nested deeper than " + std::to_string(max_depth_) + " levels", field);
    }
    stack_.push_back({place(std::move(empty)), ""});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  int max_depth_;
  json root_;
  std::vector<Frame> stack_;
};

}  // namespace

json read_json(const std::string& text, int max_depth) {
  BoundedBuilder b(max_depth);
  if (!json::sax_parse(text, &b)) throw JsonReadError("the request body is not valid JSON", "");
  return b.result();
}

}  // namespace greta::server
