//! Files on the ring: reads, writes and `fdatasync` as ring requests, so a task waits
//! for the disk while the thread's other tasks run. Opening, renaming and removing stay
//! ordinary system calls: they are rare (segment rotation, snapshots) and quick.

use crate::ring::{run, run_owning};
use io_uring::{opcode, types};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An open file.
#[derive(Debug)]
pub struct File {
    file: std::fs::File,
}

impl From<std::fs::File> for File {
    fn from(file: std::fs::File) -> File {
        File { file }
    }
}

impl File {
    /// The file, for what needs no waiting (`pwrite` into the page cache, `fstat`).
    pub fn std(&self) -> &std::fs::File {
        &self.file
    }

    /// Writes all of `bytes` at `pos`.
    pub async fn write_all_at(&self, pos: u64, bytes: Vec<u8>) -> io::Result<()> {
        let mut buf = bytes;
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &buf[done..];
            let entry = opcode::Write::new(
                types::Fd(self.file.as_raw_fd()),
                rest.as_ptr(),
                u32::try_from(rest.len()).unwrap_or(u32::MAX),
            )
            .offset(pos + done as u64)
            .build();
            let (n, back) = run_owning(entry, buf).await?;
            buf = back;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"));
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let mut buf: Vec<u8> = Vec::with_capacity(len - out.len());
            let entry = opcode::Read::new(
                types::Fd(self.file.as_raw_fd()),
                buf.as_mut_ptr(),
                u32::try_from(buf.capacity()).unwrap_or(u32::MAX),
            )
            .offset(pos + out.len() as u64)
            .build();
            let (n, mut buf) = run_owning(entry, buf).await?;
            let n = n as usize;
            if n == 0 {
                break;
            }
            // SAFETY: the kernel wrote `n` bytes, at most the capacity it was given.
            unsafe { buf.set_len(n.min(buf.capacity())) };
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Makes the file's data durable (`fdatasync`).
    pub async fn sync_data(&self) -> io::Result<()> {
        sync(self.file.as_raw_fd(), types::FsyncFlags::DATASYNC).await
    }
}

async fn sync(fd: i32, flags: types::FsyncFlags) -> io::Result<()> {
    run(opcode::Fsync::new(types::Fd(fd)).flags(flags).build())
        .await
        .map(drop)
}

/// Makes the directory's entries (creates, renames, removes) durable.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(dir)?;
    sync(dir.as_raw_fd(), types::FsyncFlags::empty()).await
}
