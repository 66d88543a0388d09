# scripts/toolchain.sh: sourced by scripts/deps, serve, test and vmtest. Under sudo, finds
# the invoking user's Rust toolchain (sudo's secure_path hides ~/.cargo/bin) and defines
# `as_user`, which runs a command as that user, so builds write nothing owned by root into
# their checkout; root is only needed to install packages and to run what loads BPF.
# Without sudo (CI runs as root), for root, or when that user has no rustup toolchain,
# `as_user` just runs the command.
as_user() { "$@"; }
# The user whose toolchain builds: sudo's invoking user, root included (`sudo scripts/serve`
# typed by root: SUDO_USER=root, and secure_path hides /root/.cargo/bin just the same), else
# whoever runs this.
toolchain_user=${SUDO_USER:-$(id -un)}
toolchain_home=$(getent passwd "$toolchain_user" | cut -d: -f6)
if [ -n "$toolchain_home" ] && [ -x "$toolchain_home/.cargo/bin/cargo" ] && ! command -v cargo >/dev/null; then
  export CARGO_HOME=$toolchain_home/.cargo RUSTUP_HOME=$toolchain_home/.rustup
  PATH="$CARGO_HOME/bin:$PATH"
fi
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && command -v sudo >/dev/null; then
  if [ -n "$toolchain_home" ] && [ -x "$toolchain_home/.cargo/bin/cargo" ]; then
    export CARGO_HOME=$toolchain_home/.cargo RUSTUP_HOME=$toolchain_home/.rustup
    PATH="$CARGO_HOME/bin:$PATH"
    # sudo resets PATH to its secure_path whatever it is told to keep: env sets it again.
    as_user() {
      sudo -u "$SUDO_USER" env PATH="$PATH" CARGO_HOME="$CARGO_HOME" RUSTUP_HOME="$RUSTUP_HOME" \
        ${CI:+CI="$CI"} "$@"
    }
  fi
fi
