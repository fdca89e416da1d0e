// provides: struct tensor_table — the one list of named parameter tensors (DESIGN.md §2).
//
// params, grads and every optimizer state are single contiguous float arrays of table.total
// floats; a tensor is the range [offset, offset + rows*cols). Tensors are added in forward order,
// so backward finishes them back to front. Sizes, init, checkpoints, optimizer groups, gradient
// buckets and probes all iterate this table; nothing else keeps a list of parameters.
#ifndef CANARY_MODEL_TENSORS_H
#define CANARY_MODEL_TENSORS_H

#include <stddef.h>

enum tensor_kind {
    TENSOR_EMBEDDING,     // token embedding [vocab, dim]
    TENSOR_POS_EMBEDDING, // learned positions [seq_len, dim]
    TENSOR_MATRIX,        // hidden 2-D weight [out, in] (attention, MLP)
    TENSOR_GAIN,          // norm gain [1, n]
    TENSOR_HEAD,          // output projection [vocab, dim]
    TENSOR_EXPERT,        // a routed or shared expert's MLP matrix [out, in]
    TENSOR_ROUTER,        // MoE router [experts, dim]
};

#define TENSOR_NAME_MAX 64

struct tensor {
    char name[TENSOR_NAME_MAX]; // dotted, PyTorch-like: "blocks.3.attn.wq"
    int rows, cols;             // row-major [out, in] like torch.nn.Linear; gains have rows = 1
    enum tensor_kind kind;
    int layer;     // block index, -1 outside the blocks
    size_t offset; // first float in the flat arrays
    size_t size;   // rows * cols
    // the tensor's AdamW learning-rate multiplier: 1, or µParam's base_fan_in / fan_in for hidden
    // matrices (model_init); Muon's group keeps its own shape scaling and ignores it
    double lr_scale;
};

struct tensor_table {
    struct tensor *t; // n entries, owned
    int n, cap;
    size_t total; // floats in params (and in grads, and in each optimizer state)
};

void tensor_table_init(struct tensor_table *tt);
void tensor_table_free(struct tensor_table *tt);
// Appends a tensor after the previous one; returns its index.
int tensor_table_add(struct tensor_table *tt, const char *name, int rows, int cols,
                     enum tensor_kind kind, int layer);
// Index of the tensor called name, or -1.
int tensor_table_find(const struct tensor_table *tt, const char *name);
// The kind as a word: "embedding", "pos_embedding", "matrix", "gain", "head", "expert", "router".
const char *tensor_kind_name(enum tensor_kind kind);
// True for the kinds that take weight decay by default (every 2-D tensor, not gains).
int tensor_kind_decays(enum tensor_kind kind);

#endif
