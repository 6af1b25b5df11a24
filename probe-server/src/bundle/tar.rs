//! The bundle's archive: ustar entries for regular files, written with the `tar` crate.

/// Appends one regular file owned by root. `path` is relative (the bundle names its own files,
/// so a bad one is a programming error, not input).
pub fn append(out: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mtime: u64, mode: u32) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mtime(mtime);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    // Both are at most 32 bytes in ustar; "root" fits.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    out.append_data(&mut h, path, data)
        .unwrap_or_else(|e| panic!("bad tar path {path:?}: {e}"));
}

/// Ends the archive (two zero blocks) and returns its bytes.
pub fn finish(out: tar::Builder<Vec<u8>>) -> Vec<u8> {
    out.into_inner().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in files {
            append(&mut b, p, d, 1_700_000_000, 0o600);
        }
        finish(b)
    }

    #[test]
    fn header_layout_and_padding() {
        let a = archive(&[("b/x.txt", b"hello")]);
        assert_eq!(a.len() % 512, 0);
        assert_eq!(&a[..7], b"b/x.txt");
        assert_eq!(&a[257..262], b"ustar");
        assert_eq!(&a[512..517], b"hello");
        // Read back with the same crate: names, sizes, modes, owner.
        let mut r = tar::Archive::new(&a[..]);
        let e: Vec<_> = r
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.size().unwrap(),
                    h.mode().unwrap(),
                    h.username().unwrap().map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(
            e,
            vec![("b/x.txt".to_string(), 5, 0o600, Some("root".to_string()))]
        );
    }

    #[test]
    fn system_tar_reads_it() {
        let Some(tar) = ["/usr/bin/tar", "/bin/tar"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            return; // No tar on this machine: the layout test above still ran.
        };
        let a = archive(&[("d/one.txt", b"1"), ("d/two.json", &[b'x'; 700])]);
        let dir = std::env::temp_dir().join(format!("tar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.tar");
        std::fs::write(&file, &a).unwrap();
        let out = std::process::Command::new(tar)
            .arg("-tvf")
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            listing.contains("d/one.txt") && listing.contains(" 700 "),
            "{listing}"
        );
    }
}
