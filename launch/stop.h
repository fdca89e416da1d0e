// provides: a stop request by signal — how a scheduler preempts a job (Slurm sends SIGTERM to
// every task, a user presses Ctrl-C). The training loop polls it at each step boundary; the ranks
// agree on it there, write a checkpoint, flush the probes and exit with TRAIN_EXIT_STOPPED.
#ifndef CANARY_LAUNCH_STOP_H
#define CANARY_LAUNCH_STOP_H

// Installs the handler for SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 (mpirun forwards the last two to
// every rank; `scancel --signal=USR1` or `sbatch --signal=B:USR1@120` send them ahead of a time
// limit). A second signal of the same kind takes its default action: a stuck run still dies.
void stop_install(void);
// 0, or the number of the first signal received since stop_install.
int stop_requested(void);
// The name of a signal number ("SIGTERM"), for messages.
const char *stop_signal_name(int sig);

#endif
