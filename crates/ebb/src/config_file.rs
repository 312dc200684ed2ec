//! Reading `ebb.toml` from disk, bounded: a config path that names a FIFO,
//! a device (`/dev/zero`) or a huge file is refused with a clear message
//! instead of blocking or reading for ever.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest config file read: far above any real one, small enough to parse
/// at once.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Why a config file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{}: error: cannot read the config file: {source}; create one (see docs/config.md) or pass -f FILE", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: error: the config file is {what}, not a regular file; pass -f with the path of an ebb.toml", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error(
        "{}: error: the config file is larger than {} MiB ({size} bytes); is this the right file?",
        path.display(),
        MAX_CONFIG_BYTES / (1024 * 1024)
    )]
    TooLarge { path: PathBuf, size: u64 },
}

/// Reads the config file at `path`: a regular file of at most
/// [`MAX_CONFIG_BYTES`], as UTF-8 text.
pub fn read(path: &Path) -> Result<String, ConfigFileError> {
    let io = |source| ConfigFileError::Io { path: path.to_path_buf(), source };
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer. The
    // checks below run on what was opened, not on the name.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = match () {
            _ if kind.is_dir() => "a directory",
            _ if kind.is_fifo() => "a FIFO (named pipe)",
            _ if kind.is_char_device() => "a character device",
            _ if kind.is_block_device() => "a block device",
            _ if kind.is_socket() => "a socket",
            _ => "not a regular file",
        };
        return Err(ConfigFileError::NotRegular { path: path.to_path_buf(), what });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigFileError::TooLarge { path: path.to_path_buf(), size: meta.len() });
    }
    // Bounded even if the file grows while it is read.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigFileError::TooLarge { path: path.to_path_buf(), size: text.len() as u64 });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_a_sane_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ebb.toml");
        std::fs::write(&ok, "state_dir = \"s\"\n").unwrap();
        assert_eq!(read(&ok).unwrap(), "state_dir = \"s\"\n");

        let err = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("a character device, not a regular file"), "{err}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read(&fifo).unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        let big = dir.path().join("big.toml");
        std::fs::File::create(&big).unwrap().set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = read(&big).unwrap_err().to_string();
        assert!(err.contains("larger than 4 MiB"), "{err}");
        let err = read(&dir.path().join("missing.toml")).unwrap_err().to_string();
        assert!(err.contains("cannot read the config file"), "{err}");
    }
}
