/*
 * Test-only stand-in for Windows' bcryptprimitives.dll, which Wine 8 lacks.
 *
 * Rust's standard library (1.78 and later) takes its randomness (HashMap
 * keys, among others) from bcryptprimitives!ProcessPrng, so without this DLL
 * every Rust test binary for x86_64-pc-windows-gnu fails to load under Wine.
 * ProcessPrng is forwarded to advapi32!SystemFunction036 (RtlGenRandom),
 * which Wine implements over the host's CSPRNG: the bytes are real
 * randomness, never a constant. It is copied into a Wine prefix's system32
 * by tests/wine/prefix.sh and never ships in a package.
 */
#include <windows.h>

/* RtlGenRandom's real name; advapi32's import library exports it. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a 32-bit length, ProcessPrng a SIZE_T: go in chunks. */
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) {
            /* Windows' ProcessPrng never fails; a caller that gets FALSE
             * would use unfilled memory, so stop the process instead. */
            ExitProcess(0xC000000DUL);
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
