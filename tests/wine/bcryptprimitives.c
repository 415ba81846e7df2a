/* A stand-in for Windows' bcryptprimitives.dll, for running the cross-built Windows programs
 * under Wine 8 only.
 *
 * Rust's standard library (1.78 and later) takes its random numbers from ProcessPrng in
 * bcryptprimitives.dll, which Windows 10 and later have and Wine 8 lacks. `cargo xtask windows`
 * builds this file with mingw-w64 and puts the DLL beside the test executables under target/; it
 * never goes into a bundle.
 *
 * Thread: any (whatever thread of the test program asks for random bytes)
 */
#include <windows.h>

/* RtlGenRandom, exported by advapi32 under this name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
