// The C++ side of data/bpe.h: SentencePiece's trainer and processor behind a C interface.
// Nothing here keeps state between calls except the processor a `struct bpe` owns; exceptions
// never cross into C (SentencePiece reports through util::Status; everything thrown is caught).
// SentencePiece's own fatal checks (CHECK) end the process, which no caller can prevent.
#include "data/bpe.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

// Defined in libsentencepiece (its internal common.h): the trainer logs its progress to stderr at
// INFO; canary prints its own one-line summary instead.
namespace sentencepiece
{
namespace logging
{
void SetMinLogLevel(int v);
}
} // namespace sentencepiece

struct bpe {
    sentencepiece::SentencePieceProcessor sp;
};

namespace
{

// Lines longer than this are cut for training (SentencePiece skips sentences above its
// max_sentence_length, 4192 bytes by default); the cut falls before a UTF-8 lead byte.
const size_t kMaxSentence = 4000;

// Walks text[len] as training sentences: its lines, long ones cut, empty ones skipped.
class LineIterator : public sentencepiece::SentenceIterator
{
  public:
    LineIterator(const char *text, size_t len) : text_(text), len_(len)
    {
        Next();
    }
    bool done() const override
    {
        return done_;
    }
    const std::string &value() const override
    {
        return value_;
    }
    sentencepiece::util::Status status() const override
    {
        return {};
    }
    void Next() override
    {
        for (;;) {
            if (pos_ >= len_) {
                done_ = true;
                return;
            }
            size_t end = pos_;
            while (end < len_ && text_[end] != '\n' && end - pos_ < kMaxSentence)
                end++;
            if (end < len_ && text_[end] != '\n') // cut: back up to a character boundary
                while (end > pos_ + 1 && (static_cast<unsigned char>(text_[end]) & 0xC0) == 0x80)
                    end--;
            value_.assign(text_ + pos_, end - pos_);
            pos_ = end < len_ && text_[end] == '\n' ? end + 1 : end;
            if (!value_.empty())
                return;
        }
    }

  private:
    const char *text_;
    size_t len_, pos_ = 0;
    bool done_ = false;
    std::string value_;
};

// Allocation-free (it runs inside catch blocks): SentencePiece's messages may span lines
// ("... \n Please set it to ..."), so newlines become spaces, and trailing ones go.
void set_err(char *err, size_t errlen, const char *what, const char *msg)
{
    std::snprintf(err, errlen, "%s: %s", what, msg);
    size_t n = std::strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == '\r' || err[n - 1] == ' '))
        err[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (err[i] == '\n' || err[i] == '\r')
            err[i] = ' ';
}

template <typename T> T *copy_out(const std::vector<T> &v)
{
    T *p = static_cast<T *>(std::malloc(v.size() ? v.size() * sizeof(T) : 1));
    if (p && !v.empty())
        std::memcpy(p, v.data(), v.size() * sizeof(T));
    return p;
}

} // namespace

extern "C" int bpe_train(const char *text, size_t len, int vocab, char **model, size_t *model_len,
                         char *err, size_t errlen)
{
    try {
        sentencepiece::logging::SetMinLogLevel(2); // errors only
        // identity normaliser, no dummy prefix, no whitespace folding: lossless; byte fallback:
        // every byte has an id; no <s> </s>: the ids are the text's. One thread keeps the
        // learned merges the same on every machine.
        std::string args = "--model_type=bpe --vocab_size=" + std::to_string(vocab) +
                           " --byte_fallback=true --character_coverage=1.0"
                           " --normalization_rule_name=identity --add_dummy_prefix=false"
                           " --remove_extra_whitespaces=false --split_digits=false"
                           " --bos_id=-1 --eos_id=-1 --unk_id=0 --num_threads=1"
                           " --max_sentence_length=" +
                           std::to_string(kMaxSentence + 8);
        LineIterator it(text, len);
        std::string proto;
        auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
        if (!st.ok()) {
            set_err(err, errlen, "SentencePiece", st.ToString().c_str());
            return -1;
        }
        *model = static_cast<char *>(std::malloc(proto.size()));
        if (!*model) {
            std::snprintf(err, errlen, "out of memory");
            return -1;
        }
        std::memcpy(*model, proto.data(), proto.size());
        *model_len = proto.size();
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, "SentencePiece", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "SentencePiece", "unknown C++ exception");
        return -1;
    }
}

extern "C" struct bpe *bpe_load(const char *model, size_t model_len, char *err, size_t errlen)
{
    try {
        bpe *b = new bpe;
        auto st = b->sp.LoadFromSerializedProto(std::string(model, model_len));
        if (!st.ok()) {
            set_err(err, errlen, "not a SentencePiece model", st.ToString().c_str());
            delete b;
            return nullptr;
        }
        return b;
    } catch (const std::exception &e) {
        set_err(err, errlen, "load SentencePiece model", e.what());
        return nullptr;
    } catch (...) {
        set_err(err, errlen, "load SentencePiece model", "unknown C++ exception");
        return nullptr;
    }
}

extern "C" void bpe_free(struct bpe *b)
{
    delete b;
}

extern "C" int bpe_vocab(const struct bpe *b)
{
    return b->sp.GetPieceSize();
}

extern "C" int bpe_encode(const struct bpe *b, const char *text, size_t len, uint16_t **ids,
                          size_t *n, char *err, size_t errlen)
{
    try {
        if (b->sp.GetPieceSize() > 65536) {
            std::snprintf(err, errlen, "the tokenizer has %d ids; uint16 tokens hold 65536",
                          b->sp.GetPieceSize());
            return -1;
        }
        std::vector<uint16_t> out;
        out.reserve(len / 3 + 16);
        std::vector<int> line;
        for (size_t pos = 0; pos < len;) {
            const char *nl = static_cast<const char *>(std::memchr(text + pos, '\n', len - pos));
            size_t end = nl ? static_cast<size_t>(nl - text) + 1 : len;
            auto st = b->sp.Encode(std::string_view(text + pos, end - pos), &line);
            if (!st.ok()) {
                set_err(err, errlen, "SentencePiece encode", st.ToString().c_str());
                return -1;
            }
            for (int id : line)
                out.push_back(static_cast<uint16_t>(id));
            pos = end;
        }
        *ids = copy_out(out);
        if (!*ids) {
            std::snprintf(err, errlen, "out of memory");
            return -1;
        }
        *n = out.size();
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, "SentencePiece encode", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "SentencePiece encode", "unknown C++ exception");
        return -1;
    }
}

extern "C" int bpe_decode(const struct bpe *b, const uint16_t *ids, size_t n, char **text,
                          size_t *len, char *err, size_t errlen)
{
    try {
        int V = b->sp.GetPieceSize();
        std::vector<int> v(ids, ids + n);
        for (size_t i = 0; i < n; i++)
            if (v[i] >= V) {
                std::snprintf(err, errlen,
                              "token %d at position %zu is not in the tokenizer's %d ids", v[i], i,
                              V);
                return -1;
            }
        std::string s;
        auto st = b->sp.Decode(v, &s);
        if (!st.ok()) {
            set_err(err, errlen, "SentencePiece decode", st.ToString().c_str());
            return -1;
        }
        *text = static_cast<char *>(std::malloc(s.size() + 1));
        if (!*text) {
            std::snprintf(err, errlen, "out of memory");
            return -1;
        }
        std::memcpy(*text, s.data(), s.size());
        (*text)[s.size()] = '\0';
        *len = s.size();
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, "SentencePiece decode", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "SentencePiece decode", "unknown C++ exception");
        return -1;
    }
}
