//! A ustar archive writer (POSIX.1-1988 headers, regular files only): all the bundle needs,
//! and simple enough not to pull in a crate.

const BLOCK: usize = 512;

/// Appends one regular file. `path` must be relative, ASCII and at most 100 bytes (the bundle
/// names its own files, so this is a programming error, not input).
pub fn append(out: &mut Vec<u8>, path: &str, data: &[u8], mtime: u64, mode: u32) {
    assert!(
        path.len() <= 100 && path.is_ascii() && !path.starts_with('/'),
        "bad tar path {path:?}"
    );
    let mut h = [0u8; BLOCK];
    h[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is computed with its own field as spaces.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(digits.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
}

/// The two zero blocks that end an archive.
pub fn finish(out: &mut Vec<u8>) {
    out.resize(out.len() + 2 * BLOCK, 0);
}

/// Zero-padded octal with a trailing NUL, filling the field.
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_padding() {
        let mut a = Vec::new();
        append(&mut a, "b/x.txt", b"hello", 1_700_000_000, 0o600);
        finish(&mut a);
        assert_eq!(a.len(), 512 + 512 + 1024);
        assert_eq!(&a[..7], b"b/x.txt");
        assert_eq!(&a[124..136], b"00000000005\0");
        assert_eq!(&a[257..262], b"ustar");
        assert_eq!(&a[512..517], b"hello");
        // Checksum: recompute over the header with the field as spaces.
        let mut h = a[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].fill(b' ');
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
    }

    #[test]
    fn system_tar_reads_it() {
        let Some(tar) = ["/usr/bin/tar", "/bin/tar"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            return; // No tar on this machine: the layout test above still ran.
        };
        let mut a = Vec::new();
        append(&mut a, "d/one.txt", b"1", 0, 0o644);
        append(&mut a, "d/two.json", &[b'x'; 700], 0, 0o644);
        finish(&mut a);
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
