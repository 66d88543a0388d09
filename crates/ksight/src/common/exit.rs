//! Exit codes: bad input is 2, like a bad flag; anything else that fails is 1.

/// Bad input found after argument parsing (a web config file, say): exit 2, like a bad flag.
#[derive(Debug)]
pub struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Marks `err` as bad input (exit 2).
pub fn bad_input(err: anyhow::Error) -> anyhow::Error {
    BadInput(format!("{err:#}")).into()
}
