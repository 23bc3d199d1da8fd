/*
 * A stand-in for the WDK's BufferOverflowFastFailK.lib: the /GS security cookie symbols
 * that MSVC-style code compiled with stack protection refers to. Written for this project;
 * compiled with clang for x86_64-pc-windows-msvc by scripts/setup-kernel-check and never
 * shipped. The value is the one MSVC's runtime starts with (a real driver's loader or
 * GsDriverEntry replaces it); a failed check ends with __fastfail(FAST_FAIL_STACK_COOKIE_
 * CHECK_FAILURE), as the WDK's library does.
 */
unsigned long long __security_cookie = 0x00002B992DDFA232ULL;
unsigned long long __security_cookie_complement = ~0x00002B992DDFA232ULL;

void __security_check_cookie(unsigned long long cookie)
{
    if (cookie != __security_cookie) {
        __fastfail(2); /* FAST_FAIL_STACK_COOKIE_CHECK_FAILURE */
    }
}
