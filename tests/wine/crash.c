/* A Windows program that crashes at once (an access violation), for the test that a crash under
 * Wine ends as an exit code and not in Wine's crash debugger waiting for ever
 * (xtask/src/windows.rs, `a_crash_under_wine_is_an_exit_code`). Never bundled.
 *
 * Thread: main
 */
int main(void)
{
    volatile int *nowhere = (volatile int *)0;
    *nowhere = 1;
    return 0;
}
