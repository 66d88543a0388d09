# scripts/toolchain.sh: sourced by scripts/deps, serve, test and vmtest. Under sudo, finds
# the invoking user's Rust toolchain (sudo's secure_path hides ~/.cargo/bin) and defines
# `as_user`, which runs a command as that user, so builds write nothing owned by root into
# their checkout; root is only needed to install packages and to run what loads BPF.
# Without sudo (CI runs as root), or when that user has no rustup toolchain, `as_user` just
# runs the command.
as_user() { "$@"; }
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && command -v sudo >/dev/null; then
  invoking_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  if [ -n "$invoking_home" ] && [ -x "$invoking_home/.cargo/bin/cargo" ]; then
    export CARGO_HOME=$invoking_home/.cargo RUSTUP_HOME=$invoking_home/.rustup
    PATH="$CARGO_HOME/bin:$PATH"
    # sudo resets PATH to its secure_path whatever it is told to keep: env sets it again.
    as_user() {
      sudo -u "$SUDO_USER" env PATH="$PATH" CARGO_HOME="$CARGO_HOME" RUSTUP_HOME="$RUSTUP_HOME" \
        ${CI:+CI="$CI"} "$@"
    }
  fi
fi
