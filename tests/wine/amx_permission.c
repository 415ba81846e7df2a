/* Asks Linux for permission to use AMX in every process it is preloaded into, for running the
 * cross-built Windows programs under Wine only.
 *
 * Linux lets a process use the AMX tile registers only after it asks
 * (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); kernel doc arch/x86/xstate). ONNX
 * Runtime's Linux build asks; its Windows build does not, because Windows enables AMX for every
 * process, and Wine 8 does not ask on the program's behalf. On a CPU with AMX, onnxruntime.dll
 * under Wine then dies on its first `tileloadd` (SIGILL). The permission does not survive execve,
 * so it has to be asked for inside the Wine processes themselves: `cargo xtask windows` builds
 * this file with the host's gcc and sets LD_PRELOAD on every `wine` it runs. It never goes into a
 * bundle. On a CPU or kernel without AMX the call fails and nothing changes.
 *
 * Thread: the loading thread, once, before main
 */
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

__attribute__((constructor)) static void moodfader_request_amx(void)
{
    (void)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
}
