// Learning-rate schedules (Wortsman et al. §2.1: linear warmup, then cosine to a minimum).
#include <math.h>

#include "optim/optim.h"

double schedule_lr(const struct optim_config *oc, long step, long total_steps)
{
    double peak = oc->lr;
    if (step < oc->warmup_steps)
        return peak * (double)(step + 1) / (double)oc->warmup_steps;
    long span = total_steps - oc->warmup_steps;
    double p = (double)(step - oc->warmup_steps) / (double)(span > 1 ? span : 1);
    if (p > 1.0)
        p = 1.0;
    switch (oc->schedule) {
    case SCHEDULE_COSINE:
        return oc->min_lr + (peak - oc->min_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
    case SCHEDULE_LINEAR:
        return peak + (oc->min_lr - peak) * p;
    case SCHEDULE_CONSTANT:
        return peak;
    }
    return peak;
}
