// Which config a replay runs with (replay.h: replay_config_for, replay_load): a run resumed with
// other settings (--set on `train --resume`) keeps the config its earlier steps ran with as
// config.ini.to_step_NNNNNNNN (launch/rundir.c), so the steps up to N ran with that file and later
// ones with a later file or config.ini.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "launch/cli.h"
#include "launch/replay.h"
#include "launch/rundir.h"

int replay_config_for(const char *run_dir, long first, long last, char *path, size_t len, char *err,
                      size_t errlen)
{
    DIR *dir = opendir(run_dir);
    if (!dir) {
        snprintf(err, errlen, "replay: read '%s': %s", run_dir, strerror(errno));
        return -1;
    }
    long best = LONG_MAX, split = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        long n = 0;
        if (!rundir_kept_config_step(e->d_name, &n))
            continue;
        if (n >= first && n < last) // steps first .. n ran with this file, n + 1 .. with another
            split = split && split < n ? split : n;
        else if (n >= last && n < best)
            best = n;
    }
    closedir(dir);
    if (split) {
        snprintf(err, errlen,
                 "replay: the run was resumed after step %ld with other settings (the earlier "
                 "ones are in %s/config.ini.to_step_%08ld), inside the replayed steps %ld .. "
                 "%ld: a replay reruns steps that ran with one config (a smaller --window, "
                 "from a checkpoint at or after step %ld)",
                 split, run_dir, split, first, last, split);
        return -1;
    }
    if (best == LONG_MAX)
        snprintf(path, len, "%s/config.ini", run_dir);
    else
        snprintf(path, len, "%s/config.ini.to_step_%08ld", run_dir, best);
    return 0;
}

int replay_load(struct cli_config_opts *opts, char *config_path, size_t pathlen,
                const char *run_dir, long step, long window, struct dist_ctx *d, struct config *cfg,
                struct replay_plan *p, char *err, size_t errlen)
{
    int ok = 1;
    opts->config_path = config_path;
    // config.ini, then (once) the file the steps ran with when that is another
    for (int again = 1, pass = 0; again && ok; pass++) {
        if (cli_load_config(cfg, opts, d, 1) != 0) {
            replay_plan_free(p);
            return -1;
        }
        // every probe at cadence 1; the replay keeps one checkpoint, the state before S
        cfg->probes.enabled = 1;
        cfg->probes.every = 1;
        cfg->probes.lr_probe_every = 1;
        cfg->train.keep_checkpoints = 1;
        char ran[CONFIG_PATH_MAX + 64] = "";
        replay_plan_free(p);
        ok = d->rank != 0 ||
             (replay_plan_make(p, run_dir, step, window, cfg, d->size, err, errlen) == 0 &&
              replay_config_for(run_dir, p->start + 1, p->end, ran, sizeof(ran), err, errlen) == 0);
        again = d->rank == 0 && ok && pass == 0 && strcmp(ran, config_path) != 0;
        if (again)
            snprintf(config_path, pathlen, "%s", ran);
        dist_bcast_bytes(d, &again, sizeof(again));
    }
    if (ok && d->rank == 0) { // the threads the run had, before --set train.threads
        struct config ran;
        config_defaults(&ran);
        ok = config_load_file(&ran, config_path, err, errlen) == 0;
        p->run_threads = ran.train.threads;
    }
    return ok;
}
