// launch/config: defaults, INI parsing and its errors, --set, validation, round trip.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch/config.h"
#include "tests/testing.h"

static char path[256];

static void write_file(const char *text)
{
    FILE *f = NULL;
    snprintf(path, sizeof(path), "/tmp/canary_test_config_%ld.ini", (long)getpid());
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int teardown(void **state)
{
    unlink(path);
    return 0;
}

static void test_config_defaults_are_wortsman_like(void **state)
{
    struct config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(c.model.dim, 64);
    assert_int_equal(c.model.norm, NORM_LAYERNORM);
    assert_int_equal(c.model.pos, POS_ROPE);
    expect_near(c.optim.beta2, 0.95, 0.0);
    expect_near(c.optim.eps, 1e-8, 0.0);
    expect_near(c.optim.z_loss, 1e-4, 0.0);
    assert_int_equal(c.optim.wd_mode, WD_INDEPENDENT);
    assert_int_equal(config_validate(&c, 1, 0, err, sizeof(err)), 0);
    assert_int_equal(c.model.head_dim, 16); // resolved from dim / heads
}

static void test_config_file_and_set(void **state)
{
    struct config c;
    char err[512], v[64];
    write_file("; comment\n[model]\ndim = 128\nqk_norm = true\nnorm = rmsnorm\n[optim]\nlr = "
               "3e-3\n");
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.model.dim, 128);
    assert_int_equal(c.model.qk_norm, 1);
    assert_int_equal(c.model.norm, NORM_RMSNORM);
    assert_int_equal(config_set(&c, "optim.lr=1e-2", err, sizeof(err)), 0);
    expect_near(c.optim.lr, 1e-2, 0.0);
    assert_int_equal(config_set(&c, "model.mlp = swiglu", err, sizeof(err)), 0);
    assert_int_equal(c.model.mlp, MLP_SWIGLU);
    assert_int_equal(config_get_string(&c, "model.mlp", v, sizeof(v)), 0);
    assert_string_equal(v, "swiglu");
}

static void expect_file_error(const char *text, const char *needle)
{
    struct config c;
    char err[512];
    write_file(text);
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
    assert_non_null(strstr(err, path)); // the file is named
    assert_int_equal(c.model.dim, 64);  // a failed load leaves the config as it was
}

static void test_config_file_errors_name_line_and_key(void **state)
{
    expect_file_error("[model]\ndim = 32\ndimm = 4\n", ":3: unknown key 'dimm'");
    expect_file_error("[model]\ndimm = 4\n", "did you mean 'model.dim'");
    expect_file_error("[model]\nseq_lne = 4\n", "did you mean 'model.seq_len'");
    expect_file_error("[optim]\nwarmup = 4\n", "did you mean 'optim.warmup_steps'");
    expect_file_error("[model]\nnorm = batchnorm\n", "one of layernorm, rmsnorm");
    expect_file_error("[optim]\nlr = 0\n", "optim.lr = 0 is out of range");
    expect_file_error("[optim]\nlr = -1e-3\n", "out of range");
    expect_file_error("[optim]\nlr = fast\n", "is not a number");
    expect_file_error("[train]\nsteps = 0\n", "train.steps = 0 is out of range");
    expect_file_error("[train]\nsteps = 1.5\n", "not an integer");
    expect_file_error("[model]\nqk_norm = maybe\n", "not a boolean");
    expect_file_error("[model]\ndim 64\n", ":2: syntax error");
    expect_file_error("[modle]\ndim = 64\n", "did you mean 'model.dim'");
    // the first problem is reported, with its own line
    expect_file_error("[model]\ndim 64\nlayers = 2\nheads = x\n", ":2: syntax error");
    expect_file_error("[model]\nheads = x\ndim 64\n", ":2: model.heads = 'x'");
    expect_file_error("[optim]\nwarmup_steps = 2\nlr = 0\nbeta1 = 7\n", ":3: optim.lr = 0");
    // a line libinih would cut is refused
    char longline[400];
    memset(longline, 'a', sizeof(longline));
    memcpy(longline, "[data]\ntrain = ", 15);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    expect_file_error(longline, ":2: line longer than");
}

static void test_config_set_errors(void **state)
{
    struct config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(config_set(&c, "model.dim", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "expected section.key=value"));
    assert_int_equal(config_set(&c, "model.layer=3", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "did you mean 'model.layers'"));
    assert_int_equal(config_set(&c, "optim.beta1=1.0", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "out of range"));
}

static void test_config_validate_cross_key_rules(void **state)
{
    struct config c;
    char err[512];
    config_defaults(&c);
    c.model.dim = 100;
    c.model.heads = 3;
    assert_int_equal(config_validate(&c, 1, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not divisible by model.heads"));
    config_defaults(&c);
    c.model.dim = 96;
    c.model.heads = 4;
    c.model.head_dim = 0;
    c.model.pos = POS_ROPE;
    assert_int_equal(config_validate(&c, 1, 0, err, sizeof(err)), 0);
    config_defaults(&c);
    c.model.head_dim = 5;
    assert_int_equal(config_validate(&c, 1, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "must be even for RoPE"));
    config_defaults(&c);
    c.optim.min_lr = 1.0;
    assert_int_equal(config_validate(&c, 1, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "min_lr"));
    config_defaults(&c);
    c.train.batch_size = 6;
    assert_int_equal(config_validate(&c, 4, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "must divide by ranks"));
    config_defaults(&c);
    c.optim.warmup_steps = c.train.steps + 1;
    assert_int_equal(config_validate(&c, 1, 0, err, sizeof(err)), -1);
    config_defaults(&c);
    assert_int_equal(config_validate(&c, 1, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "data.train is not set"));
}

static void test_config_write_reads_back(void **state)
{
    struct config a, b;
    char err[512];
    FILE *f = NULL;
    config_defaults(&a);
    assert_int_equal(config_set(&a, "optim.lr=0.0031", err, sizeof(err)), 0);
    assert_int_equal(config_set(&a, "model.qk_norm=true", err, sizeof(err)), 0);
    assert_int_equal(config_set(&a, "data.train=some/file.bin", err, sizeof(err)), 0);
    assert_int_equal(config_set(&a, "train.seed=123456789012", err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "/tmp/canary_test_config_%ld.ini", (long)getpid());
    f = fopen(path, "w");
    config_write(&a, f);
    fclose(f);
    config_defaults(&b);
    assert_int_equal(config_load_file(&b, path, err, sizeof(err)), 0);
    assert_memory_equal(&a.model, &b.model, sizeof(a.model));
    assert_memory_equal(&a.optim, &b.optim, sizeof(a.optim));
    assert_memory_equal(&a.train, &b.train, sizeof(a.train));
    assert_memory_equal(&a.data, &b.data, sizeof(a.data));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_are_wortsman_like),
        cmocka_unit_test(test_config_file_and_set),
        cmocka_unit_test(test_config_file_errors_name_line_and_key),
        cmocka_unit_test(test_config_set_errors),
        cmocka_unit_test(test_config_validate_cross_key_rules),
        cmocka_unit_test(test_config_write_reads_back),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, teardown);
}
