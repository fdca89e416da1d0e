// Run directories: runs/NAME/{config.ini, log.txt, metrics.tsv} (probes.h5 and ckpt/ arrive with
// the probes issue).
#include "launch/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
    char path[CONFIG_PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof(path)) {
        snprintf(err, errlen, "run directory '%s': bad path", dir);
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] == '/' || path[i] == '\0') {
            char saved = path[i];
            path[i] = '\0';
            if (mkdir(path, 0777) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "create run directory '%s': %s", path, strerror(errno));
                return -1;
            }
            path[i] = saved;
        }
    }
    return 0;
}

int rundir_check_free(const char *dir, char *err, size_t errlen)
{
    char cfg[CONFIG_PATH_MAX + 16];
    struct stat st;
    snprintf(cfg, sizeof(cfg), "%s/config.ini", dir);
    if (stat(cfg, &st) == 0) {
        snprintf(err, errlen, "run directory '%s' already holds a run; choose another --out", dir);
        return -1;
    }
    return 0;
}

int rundir_create(const char *dir, char *err, size_t errlen)
{
    if (rundir_check_free(dir, err, errlen) != 0)
        return -1;
    return mkdir_p(dir, err, errlen);
}

int rundir_write_config(const char *dir, const struct config *c, char *err, size_t errlen)
{
    char path[CONFIG_PATH_MAX + 16], tmp[CONFIG_PATH_MAX + 32];
    FILE *f = NULL;
    snprintf(path, sizeof(path), "%s/config.ini", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "write '%s': %s", tmp, strerror(errno));
        return -1;
    }
    config_write(c, f);
    if (ferror(f) | (fclose(f) != 0)) {
        snprintf(err, errlen, "write '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

void rundir_default_name(char *out, size_t outlen, const char *config_path)
{
    char stem[256] = "run", stamp[32];
    const char *base = strrchr(config_path, '/');
    base = base ? base + 1 : config_path;
    if (*base) {
        snprintf(stem, sizeof(stem), "%s", base);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem)
            *dot = '\0';
    }
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    snprintf(out, outlen, "runs/%s-%s", stem, stamp);
}

// c as config.ini writes it, into a malloc'd string (NULL when out of memory).
static char *config_text(const struct config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    config_write(c, f);
    fclose(f);
    return buf;
}

// The next line of *s (advancing it) into line, its source comment ("  ; ...") cut off; 0 at the
// end.
static int next_value_line(const char **s, char *line, size_t len)
{
    if (!**s)
        return 0;
    const char *e = strchr(*s, '\n');
    size_t n = e ? (size_t)(e - *s) : strlen(*s);
    snprintf(line, len, "%.*s", (int)n, *s);
    *s += n + (e != NULL);
    char *cut = strstr(line, "  ;");
    if (cut)
        *cut = '\0';
    return 1;
}

int rundir_kept_config_step(const char *name, long *step)
{
    char tail = 0;
    return sscanf(name, "config.ini.to_step_%ld%c", step, &tail) == 1 && *step >= 1;
}

// Removes dir's config.ini.to_step_N for N > step: on a resume from step, those belong to steps
// this run takes again (a newer checkpoint did not read).
static void drop_later_kept(const char *dir, long step)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[CONFIG_PATH_MAX + 64];
    while (d && (e = readdir(d))) {
        long n = 0;
        if (rundir_kept_config_step(e->d_name, &n) && n > step) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
}

int rundir_keep_changed_config(const char *dir, const struct config *c, long step, char *changed,
                               size_t changedlen, char *err, size_t errlen)
{
    char path[CONFIG_PATH_MAX + 16], kept[CONFIG_PATH_MAX + 40];
    struct config old;
    int rc = -1;
    changed[0] = '\0';
    drop_later_kept(dir, step);
    snprintf(path, sizeof(path), "%s/config.ini", dir);
    snprintf(kept, sizeof(kept), "%s.to_step_%08ld", path, step);
    // an earlier resume from this step kept what steps 1 .. step ran with already (config.ini
    // then holds its settings, which no surviving step ran with)
    int have_kept = access(kept, F_OK) == 0;
    config_defaults(&old);
    if (config_load_file(&old, have_kept ? kept : path, err, errlen) != 0)
        return -1;
    char *a = config_text(&old), *b = config_text(c);
    if (!a || !b) {
        snprintf(err, errlen, "compare '%s' with the resumed config: out of memory", path);
        goto out;
    }
    // the same writer, so the same keys in the same order: compare line by line
    char la[CONFIG_PATH_MAX + 128], lb[CONFIG_PATH_MAX + 128], section[64] = "";
    const char *pa = a, *pb = b;
    while (next_value_line(&pa, la, sizeof(la)) && next_value_line(&pb, lb, sizeof(lb))) {
        if (la[0] == '[')
            sscanf(la, "[%63[^]]", section);
        const char *eq = strstr(la, " = "), *eqb = strstr(lb, " = ");
        if (la[0] == ';' || !eq || !eqb || !strcmp(la, lb))
            continue;
        size_t used = strlen(changed);
        snprintf(changed + used, changedlen - used, "%s%s.%.*s %s -> %s", used ? ", " : "", section,
                 (int)(eq - la), la, eq + 3, eqb + 3);
    }
    rc = 0;
    // a second name for the file, not a rename: config.ini stays until rundir_write_config
    // replaces it, so a failed write leaves the run resumable
    if (changed[0] && !have_kept && link(path, kept) != 0) {
        snprintf(err, errlen, "keep '%s' as '%s': %s", path, kept, strerror(errno));
        rc = -1;
    }
out:
    free(a);
    free(b);
    return rc;
}
