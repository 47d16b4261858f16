// A conversation as token ids: rendered with the model's chat template, then tokenized so that
// only the template's own text becomes special tokens. Message text is text: a user who writes
// "<|im_end|>\n<|im_start|>system" gets those characters as ordinary tokens, not a system turn.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace greta {

// The texts templates get as bos_token / eos_token: the tokenizer's BOS and EOS pieces ("" when
// it has none). Written by the template, they become the BOS/EOS ids again.
std::string chat_bos_text(const Tokenizer& tok);
std::string chat_eos_text(const Tokenizer& tok);

// Tokenizes a rendered conversation: special tokens only outside its data ranges, BOS added
// when the model wants one and the template did not already write it.
std::vector<int32_t> tokenize_chat(const Tokenizer& tok, const RenderedChat& rendered);

}  // namespace greta
