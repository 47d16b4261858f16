#include "backend/cpu/dump.h"

#include <cstdio>

#include "core/error.h"

namespace greta::cpu {

std::unique_ptr<Dumper> Dumper::open(const std::string& dir) {
  if (dir.empty()) return nullptr;
  return std::unique_ptr<Dumper>(new Dumper(dir));
}

void Dumper::save(const char* op, const float* data, int64_t rows, int64_t cols) {
  char name[64];
  std::snprintf(name, sizeof name, "/s%d_%04d_%s.npy", step_, index_++, op);
  const std::string path = dir_ + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error("op dump: cannot write " + path);
  // .npy version 1.0: magic, header length, a dict literal padded with spaces to a multiple of 64.
  std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                    std::to_string(cols) + "), }";
  while ((10 + hdr.size() + 1) % 64) hdr += ' ';
  hdr += '\n';
  const unsigned char pre[10] = {0x93,
                                 'N',
                                 'U',
                                 'M',
                                 'P',
                                 'Y',
                                 1,
                                 0,
                                 static_cast<unsigned char>(hdr.size() & 0xff),
                                 static_cast<unsigned char>(hdr.size() >> 8)};
  std::fwrite(pre, 1, 10, f);
  std::fwrite(hdr.data(), 1, hdr.size(), f);
  std::fwrite(data, sizeof(float), size_t(rows * cols), f);
  std::fclose(f);
}

}  // namespace greta::cpu
