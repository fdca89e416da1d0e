// The tensor table: append-only list of named ranges in the flat parameter array.
#include "model/tensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

void tensor_table_init(struct tensor_table *tt)
{
    memset(tt, 0, sizeof(*tt));
}

void tensor_table_free(struct tensor_table *tt)
{
    free(tt->t);
    memset(tt, 0, sizeof(*tt));
}

int tensor_table_add(struct tensor_table *tt, const char *name, int rows, int cols,
                     enum tensor_kind kind, int layer)
{
    struct tensor *t = NULL;
    ASSERT(rows > 0 && cols > 0);
    ASSERT(strlen(name) < TENSOR_NAME_MAX);
    ASSERT(tensor_table_find(tt, name) < 0);
    if (tt->n == tt->cap) {
        int cap = tt->cap ? 2 * tt->cap : 32;
        struct tensor *grown = realloc(tt->t, (size_t)cap * sizeof(*grown));
        if (!grown)
            FATAL("out of memory growing the tensor table");
        tt->t = grown;
        tt->cap = cap;
    }
    t = &tt->t[tt->n];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->kind = kind;
    t->layer = layer;
    t->offset = tt->total;
    t->size = (size_t)rows * (size_t)cols;
    t->lr_scale = 1.0;
    // No padding between tensors: the model relies on wq|wk|wv (and w1|w3) being adjacent so one
    // sgemm computes all three projections.
    tt->total += t->size;
    return tt->n++;
}

int tensor_table_find(const struct tensor_table *tt, const char *name)
{
    for (int i = 0; i < tt->n; i++)
        if (strcmp(tt->t[i].name, name) == 0)
            return i;
    return -1;
}

int tensor_kind_decays(enum tensor_kind kind)
{
    return kind != TENSOR_GAIN;
}

const char *tensor_kind_name(enum tensor_kind kind)
{
    switch (kind) {
    case TENSOR_EMBEDDING:
        return "embedding";
    case TENSOR_POS_EMBEDDING:
        return "pos_embedding";
    case TENSOR_MATRIX:
        return "matrix";
    case TENSOR_GAIN:
        return "gain";
    case TENSOR_HEAD:
        return "head";
    case TENSOR_EXPERT:
        return "expert";
    case TENSOR_ROUTER:
        return "router";
    }
    return "unknown";
}
