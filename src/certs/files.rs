//! Writing certificates and keys to disk, atomically, keys with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::CertError;
use super::issue::{GeneratedCerts, generate_pair};

/// File name and Secret key of the CA certificate (bundle).
pub const CA_CRT: &str = "ca.crt";
/// File name of the CA private key (never stored in the Secret).
pub const CA_KEY: &str = "ca.key";
/// File name and Secret key of the serving chain.
pub const TLS_CRT: &str = "tls.crt";
/// File name and Secret key of the serving key.
pub const TLS_KEY: &str = "tls.key";

/// Mode of private key files.
const PRIVATE_MODE: u32 = 0o600;
/// Mode of certificate files.
const PUBLIC_MODE: u32 = 0o644;
/// Validity of the development certificate made by [`ensure_dev_certificate`].
const DEV_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Writes `ca.crt`, `ca.key`, `tls.crt` (leaf then CA) and `tls.key` into `dir`,
/// creating it if needed. Key files get mode 0600.
pub fn write_pair(dir: &Path, certs: &GeneratedCerts) -> Result<(), CertError> {
    create_dir(dir)?;
    write_file(&dir.join(CA_KEY), &certs.ca_key_pem, PRIVATE_MODE)?;
    write_file(&dir.join(CA_CRT), &certs.ca_cert_pem, PUBLIC_MODE)?;
    write_serving_files(dir, &certs.cert_pem, &certs.key_pem)
}

/// Writes `tls.key` (mode 0600) then `tls.crt` into `dir`, creating it if needed.
pub fn write_serving_files(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    create_dir(dir)?;
    write_file(&dir.join(TLS_KEY), key_pem, PRIVATE_MODE)?;
    write_file(&dir.join(TLS_CRT), cert_pem, PUBLIC_MODE)
}

/// Makes a development certificate when neither `cert` nor `key` exists.
///
/// The certificate is signed by a fresh CA whose certificate is written as `ca.crt`
/// beside `cert` (so a client can trust it); it covers `localhost`, `127.0.0.1` and
/// `::1` for a year. Returns the names covered when it generated, `None` when both
/// files already exist, and an error when only one of them does.
pub fn ensure_dev_certificate(cert: &Path, key: &Path) -> Result<Option<Vec<String>>, CertError> {
    match (exists(cert)?, exists(key)?) {
        (true, true) => return Ok(None),
        (true, false) => return Err(incomplete(cert, key)),
        (false, true) => return Err(incomplete(key, cert)),
        (false, false) => {}
    }
    let certs = generate_pair(&[], &[], DEV_VALIDITY)?;
    for file in [cert, key] {
        if let Some(dir) = parent(file) {
            create_dir(dir)?;
        }
    }
    write_file(key, &certs.key_pem, PRIVATE_MODE)?;
    write_file(cert, &certs.cert_pem, PUBLIC_MODE)?;
    let ca_path = parent(cert).map_or_else(|| PathBuf::from(CA_CRT), |dir| dir.join(CA_CRT));
    write_file(&ca_path, &certs.ca_cert_pem, PUBLIC_MODE)?;
    Ok(Some(certs.names))
}

fn incomplete(present: &Path, missing: &Path) -> CertError {
    CertError::IncompletePair {
        present: present.to_path_buf(),
        missing: missing.to_path_buf(),
    }
}

fn exists(path: &Path) -> Result<bool, CertError> {
    path.try_exists()
        .map_err(|e| CertError::io("checking", path, e))
}

/// The directory of `path`, `None` for a bare file name.
fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|e| CertError::io("creating directory", dir, e))
}

/// Writes `contents` to a temporary file beside `path`, with `mode`, then renames it
/// over `path`, so a reader never sees a half-written file.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| CertError::io("writing", path, std::io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = write_new(&tmp, contents, mode).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| CertError::io("writing", path, e))
}

fn write_new(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path)?;
        // The umask may have narrowed the mode; a stale temporary file may have had another.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn write_pair_writes_four_files_with_key_modes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/out");
        let certs = generate_pair(&["svc.example".into()], &[], Duration::from_secs(3600)).unwrap();
        write_pair(&out, &certs).unwrap();
        for (name, expected) in [
            (CA_CRT, &certs.ca_cert_pem),
            (CA_KEY, &certs.ca_key_pem),
            (TLS_CRT, &certs.cert_pem),
            (TLS_KEY, &certs.key_pem),
        ] {
            assert_eq!(
                &fs::read_to_string(out.join(name)).unwrap(),
                expected,
                "{name}"
            );
        }
        #[cfg(unix)]
        {
            assert_eq!(mode(&out.join(CA_KEY)), 0o600);
            assert_eq!(mode(&out.join(TLS_KEY)), 0o600);
            assert_eq!(mode(&out.join(TLS_CRT)), 0o644);
        }
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&out).unwrap().count(), 4);
    }

    #[test]
    fn ensure_dev_certificate_generates_once() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("certs/tls.crt");
        let key = dir.path().join("certs/tls.key");
        let names = ensure_dev_certificate(&cert, &key).unwrap().unwrap();
        assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
        assert!(dir.path().join("certs/ca.crt").exists());
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
        let before = fs::read_to_string(&cert).unwrap();
        assert_eq!(ensure_dev_certificate(&cert, &key).unwrap(), None);
        assert_eq!(fs::read_to_string(&cert).unwrap(), before);
    }

    #[test]
    fn ensure_dev_certificate_refuses_half_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        fs::write(&cert, "x").unwrap();
        let err = ensure_dev_certificate(&cert, &key).unwrap_err();
        assert!(matches!(err, CertError::IncompletePair { .. }), "{err}");
        assert!(err.to_string().contains("tls.key"), "{err}");
    }
}
