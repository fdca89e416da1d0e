// provides: run directory creation and small atomic file helpers for launch/.
#ifndef CANARY_LAUNCH_RUNDIR_H
#define CANARY_LAUNCH_RUNDIR_H

#include <stddef.h>

#include "launch/config.h"

// Creates dir (and parents). Fails if it already holds a run (a config.ini), so a run never
// overwrites another. Returns 0 or -1 with a reason in err.
int rundir_create(const char *dir, char *err, size_t errlen);

// 0 when dir does not hold a run yet (it may not exist); -1 with a reason in err otherwise.
int rundir_check_free(const char *dir, char *err, size_t errlen);

// Writes the resolved config to dir/config.ini through a temporary file and rename.
int rundir_write_config(const char *dir, const struct config *c, char *err, size_t errlen);

// On resume from `step`, before config.ini is rewritten: compares the config steps 1 .. step
// ran with (dir/config.ini, or the dir/config.ini.to_step_NNNNNNNN an earlier resume from the
// same step kept) with c key by key. When a value differs (--set on resume), that config is kept
// as config.ini.to_step_NNNNNNNN (`canary replay` reads it) and `changed` lists what changed
// ("optim.lr 0.003 -> 0.5, train.steps 10 -> 20"); otherwise changed is "". Kept configs of
// later steps (a history this resume takes again) are removed. Returns 0 or -1 with err.
int rundir_keep_changed_config(const char *dir, const struct config *c, long step, char *changed,
                               size_t changedlen, char *err, size_t errlen);

// 1 when `name` is a config kept by a resume (config.ini.to_step_N), with N in *step.
int rundir_kept_config_step(const char *name, long *step);

// Longest run directory path: the files inside (ckpt/step_NNNNNNNN.h5.tmp, …) and a sweep's
// run ids must still fit CONFIG_PATH_MAX.
#define RUNDIR_PATH_MAX (CONFIG_PATH_MAX - 200)

// A default run name: runs/<config file stem>-YYYYmmdd-HHMMSS.
void rundir_default_name(char *out, size_t outlen, const char *config_path);

#endif
