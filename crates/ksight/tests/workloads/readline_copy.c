/* A small program that defines readline() (as bash does) and waits: copies of it are many
   distinct files for `trace readline` to probe (tests/readline.rs). */
#include <stddef.h>
#include <unistd.h>

__attribute__((noinline, used)) char *readline(const char *prompt) {
    (void)prompt;
    return NULL;
}

int main(void) {
    pause();
    return 0;
}
