// provides: embed_forward/backward — token embedding plus optional learned positions.
#ifndef CANARY_MODEL_EMBED_H
#define CANARY_MODEL_EMBED_H

// out[B·T, C] = wte[tokens[b,t]] (+ wpe[t] when wpe is not NULL). Overwrites out.
// tokens must already be checked < vocab (the data reader does).
void embed_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T,
                   int C);

// dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t] (when dwpe is not NULL). ACCUMULATES.
// Columns are split across threads and rows summed in token order, so repeated tokens add up in
// the same order for any thread count.
void embed_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T,
                    int C);

#endif
