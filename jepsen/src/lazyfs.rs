//! Placeholder until the lazy filesystem lands.
use std::path::Path;

pub fn control_line(_path: &Path, line: &str) -> std::io::Result<()> {
    Err(std::io::Error::other(format!(
        "lazyfs not built yet: {line}"
    )))
}
