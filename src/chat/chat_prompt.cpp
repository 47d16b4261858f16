#include "chat/chat_prompt.h"

namespace greta {

std::string chat_bos_text(const Tokenizer& tok) { return tok.bos_id >= 0 ? std::string(tok.piece(tok.bos_id)) : ""; }
std::string chat_eos_text(const Tokenizer& tok) { return tok.eos_id >= 0 ? std::string(tok.piece(tok.eos_id)) : ""; }

std::vector<int32_t> tokenize_chat(const Tokenizer& tok, const RenderedChat& rendered) {
  // Most templates that want BOS write it themselves; adding another would double it. Only the
  // template's own BOS counts: a message cannot start the text.
  const std::string bos = chat_bos_text(tok);
  const bool template_wrote_bos = !bos.empty() && rendered.text.rfind(bos, 0) == 0 &&
                                  (rendered.data.empty() || rendered.data.front().begin >= bos.size());
  return tok.encode_marked(rendered.text, tok.add_bos && !template_wrote_bos, rendered.data);
}

}  // namespace greta
