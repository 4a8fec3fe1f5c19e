//! The `local` artifact store: files under `ARTIFACT_DIR`, served by the sidecar at
//! `/files/{job_id}?expires=<unix seconds>&signature=<hex HMAC-SHA256>`.
//!
//! The signature covers the job id and the expiry, keyed by `ARTIFACT_SIGNING_KEY`, so a URL
//! can be handed to anyone and stops working at its expiry; changing either part breaks it.
//! Only names of the form `{job id}.{png|svg}` directly inside the directory are ever read,
//! and a job id is 32 hex digits, so no request can reach another file.
//!
//! The directory does not grow without end: [`LocalStore::sweep`] deletes an artifact once no
//! job record can list it and no URL to it can work any more, as the bucket's lifecycle rule
//! does for the gcs store.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ArtifactError, Placed, SignedUrl, file_name};
use crate::{
    digest::{decode_hex, hex},
    jobs::model::JobId,
    render::spec::OutputKind,
};

type HmacSha256 = Hmac<Sha256>;

/// Length of a URL signature: an HMAC-SHA256 in hex.
const SIGNATURE_HEX_LEN: usize = 64;

/// How old a file written aside must be before a sweep takes it for what a crash mid-`put`
/// left behind: a `put` links its file into place within milliseconds.
const LEFTOVER_AFTER: Duration = Duration::from_secs(3600);

/// What one [`LocalStore::sweep`] deleted, and how many deletions failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub artifacts: usize,
    pub leftovers: usize,
    pub failed: usize,
}

/// The two kinds of file this store makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    /// `{job id}.{png|svg}`.
    Artifact,
    /// `.{job id}.{32 hex digits}.{png|svg}`: written aside, linked into place, then removed.
    Aside,
}

/// Which of this store's files `name` is, if any.
fn made_here(name: &str) -> Option<Made> {
    let is_kind = |extension: &str| OutputKind::from_extension(extension).is_some();
    if let Some(aside) = name.strip_prefix('.') {
        let mut parts = aside.split('.');
        let (job, unique, extension) = (parts.next()?, parts.next()?, parts.next()?);
        let unique_ok = unique.len() == 32 && unique.bytes().all(|b| b.is_ascii_hexdigit());
        (parts.next().is_none() && job.parse::<JobId>().is_ok() && unique_ok && is_kind(extension))
            .then_some(Made::Aside)
    } else {
        let (job, extension) = name.split_once('.')?;
        (job.parse::<JobId>().is_ok() && is_kind(extension)).then_some(Made::Artifact)
    }
}

#[derive(Clone)]
pub struct LocalStore {
    dir: PathBuf,
    public_base_url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("dir", &self.dir)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// The file a valid `/files` request downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    pub path: PathBuf,
    pub kind: OutputKind,
}

/// Why a `/files` request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Signature missing, wrong or expired: 403.
    Forbidden,
    /// No such artifact: 404.
    NotFound,
}

impl LocalStore {
    /// A store writing under `dir` (created if missing), handing out URLs under
    /// `public_base_url`, signed with `key`.
    pub fn new(dir: PathBuf, public_base_url: &str, key: Vec<u8>) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(&dir).map_err(|error| {
            ArtifactError::new(format!(
                "cannot create ARTIFACT_DIR {}: {error}",
                dir.display()
            ))
        })?;
        Ok(Self {
            dir,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    fn path(&self, job: &JobId, kind: OutputKind) -> PathBuf {
        self.dir.join(file_name(job, kind))
    }

    /// Writes the artifact unless it already exists (a retried job never makes a second one).
    /// The file appears complete or not at all: it is written aside and then hard-linked into
    /// place, which fails if the name is taken.
    pub fn put(
        &self,
        job: &JobId,
        kind: OutputKind,
        bytes: &[u8],
    ) -> Result<Placed, ArtifactError> {
        let target = self.path(job, kind);
        let temporary = self.dir.join(format!(
            ".{job}.{}.{}",
            uuid::Uuid::new_v4().simple(),
            kind.extension()
        ));
        let io = |error: std::io::Error| {
            ArtifactError::new(format!("writing {}: {error}", target.display()))
        };
        let mut file = std::fs::File::create_new(&temporary).map_err(io)?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        let linked = written.and_then(|()| std::fs::hard_link(&temporary, &target));
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(Placed::Created),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                // The job is recorded as finished now, not when the earlier attempt wrote the
                // file: the sweep counts the file's age from this moment too.
                let touched = std::fs::File::options()
                    .write(true)
                    .open(&target)
                    .and_then(|file| file.set_modified(SystemTime::now()));
                if let Err(error) = touched {
                    tracing::warn!(path = %target.display(), %error, "cannot renew an existing artifact's time; a sweep may delete it before its job record expires");
                }
                Ok(Placed::AlreadyExisted)
            }
            Err(error) => Err(io(error)),
        }
    }

    /// Deletes the artifacts last written more than `keep` before `now` (the caller's `keep`
    /// outlasts every job record and signed URL that can name them), and the files a `put`
    /// cut short left aside more than an hour before. Only names this store makes are
    /// touched: anything else in the directory stays, as do directories and symbolic links.
    /// Another sidecar sweeping the same directory at once is harmless.
    pub fn sweep(&self, keep: Duration, now: SystemTime) -> Result<Swept, ArtifactError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|error| {
            ArtifactError::new(format!("listing {}: {error}", self.dir.display()))
        })?;
        let mut swept = Swept::default();
        for entry in entries {
            let Ok(entry) = entry else {
                swept.failed += 1;
                continue;
            };
            let name = entry.file_name();
            let Some(made) = name.to_str().and_then(made_here) else {
                continue;
            };
            let kept_for = match made {
                Made::Artifact => keep,
                Made::Aside => LEFTOVER_AFTER,
            };
            // The entry itself, not what a symbolic link points at.
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let expired = metadata.is_file()
                && metadata
                    .modified()
                    .ok()
                    .and_then(|modified| modified.checked_add(kept_for))
                    .is_some_and(|until| until < now);
            if !expired {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) if made == Made::Artifact => swept.artifacts += 1,
                Ok(()) => swept.leftovers += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::debug!(path = %entry.path().display(), %error, "cannot delete an expired artifact");
                    swept.failed += 1;
                }
            }
        }
        Ok(swept)
    }

    /// The artifact's bytes, if there are at most `max` of them.
    pub fn read(&self, job: &JobId, kind: OutputKind, max: u64) -> Result<Vec<u8>, ArtifactError> {
        use std::io::Read;
        let path = self.path(job, kind);
        let failed = |error: &dyn std::fmt::Display| {
            ArtifactError::new(format!("reading {}: {error}", path.display()))
        };
        let file = std::fs::File::open(&path).map_err(|error| failed(&error))?;
        let mut contents = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut contents)
            .map_err(|error| failed(&error))?;
        if contents.len() as u64 > max {
            return Err(failed(&format!("the file is larger than {max} bytes")));
        }
        Ok(contents)
    }

    fn signature(&self, job: &str, expires: u64) -> HmacSha256 {
        // HMAC accepts keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(job.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    pub fn signed_url(&self, job: &JobId, ttl: Duration) -> SignedUrl {
        let expires_at = SystemTime::now() + ttl;
        let expires = expires_at
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let signature = hex(&self
            .signature(job.as_str(), expires)
            .finalize()
            .into_bytes());
        SignedUrl {
            url: format!(
                "{}/files/{job}?expires={expires}&signature={signature}",
                self.public_base_url
            ),
            expires_at,
        }
    }

    /// Checks a `/files` request and returns the file to send.
    pub fn authorize(
        &self,
        job: &str,
        expires: Option<&str>,
        signature: Option<&str>,
    ) -> Result<ArtifactFile, Refusal> {
        // Anything that is not a job id cannot name a file here.
        let job: JobId = job.parse().map_err(|_| Refusal::NotFound)?;
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(Refusal::Forbidden);
        };
        let expires: u64 = expires.parse().map_err(|_| Refusal::Forbidden)?;
        if signature.len() != SIGNATURE_HEX_LEN {
            return Err(Refusal::Forbidden);
        }
        let signature = decode_hex(signature).ok_or(Refusal::Forbidden)?;
        self.signature(job.as_str(), expires)
            .verify_slice(&signature)
            .map_err(|_| Refusal::Forbidden)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(u64::MAX);
        if expires < now {
            return Err(Refusal::Forbidden);
        }
        [OutputKind::Png, OutputKind::Svg]
            .into_iter()
            .map(|kind| ArtifactFile {
                path: self.path(&job, kind),
                kind,
            })
            .find(|file| file.path.is_file())
            .ok_or(Refusal::NotFound)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (LocalStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("local-store-{}", uuid::Uuid::new_v4()));
        let store =
            LocalStore::new(dir.clone(), "http://127.0.0.1:3000/", b"key".to_vec()).unwrap();
        (store, dir)
    }

    fn query(url: &str) -> (String, String, String) {
        let (path, query) = url.split_once('?').unwrap();
        let job = path.rsplit('/').next().unwrap().to_owned();
        let mut expires = String::new();
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", value) => expires = value.into(),
                ("signature", value) => signature = value.into(),
                _ => {}
            }
        }
        (job, expires, signature)
    }

    #[test]
    fn a_put_happens_once_and_a_signed_url_opens_it() {
        let (store, dir) = store();
        let job = JobId::generate();
        assert_eq!(
            store.put(&job, OutputKind::Png, b"png!").unwrap(),
            Placed::Created
        );
        assert_eq!(
            store.put(&job, OutputKind::Png, b"other").unwrap(),
            Placed::AlreadyExisted
        );
        assert_eq!(
            std::fs::read(dir.join(format!("{job}.png"))).unwrap(),
            b"png!"
        );
        // Nothing is left behind but the artifact.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        let url = store.signed_url(&job, Duration::from_secs(60)).url;
        assert!(url.starts_with(&format!("http://127.0.0.1:3000/files/{job}?")));
        let (id, expires, signature) = query(&url);
        let file = store
            .authorize(&id, Some(&expires), Some(&signature))
            .unwrap();
        assert_eq!(
            file,
            ArtifactFile {
                path: dir.join(format!("{job}.png")),
                kind: OutputKind::Png
            }
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Sets the modification time of `name` in `dir` to `age` before `now`.
    fn age(dir: &Path, name: &str, now: SystemTime, age: Duration) {
        std::fs::File::options()
            .write(true)
            .open(dir.join(name))
            .unwrap()
            .set_modified(now - age)
            .unwrap();
    }

    fn names(dir: &Path) -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_sweep_deletes_only_this_stores_expired_files() {
        let (store, dir) = store();
        let (day, hour) = (Duration::from_secs(86_400), Duration::from_secs(3600));
        let now = SystemTime::now();
        let (old, fresh) = (JobId::generate(), JobId::generate());
        store.put(&old, OutputKind::Png, b"old").unwrap();
        store.put(&fresh, OutputKind::Svg, b"<svg/>").unwrap();
        age(&dir, &format!("{old}.png"), now, 2 * day);
        // What a `put` cut short leaves aside: one from long ago, one maybe still being written.
        let stale_aside = format!(".{old}.{}.png", "a".repeat(32));
        let recent_aside = format!(".{fresh}.{}.svg", "b".repeat(32));
        for name in [&stale_aside, &recent_aside] {
            std::fs::write(dir.join(name), b"partial").unwrap();
        }
        age(&dir, &stale_aside, now, 2 * hour);
        age(&dir, &recent_aside, now, hour / 2);
        // Not this store's, however old: kept.
        let foreign = [
            "notes.txt".to_owned(),
            "0123.png".to_owned(),
            format!("{old}.gif"),
            format!(".{old}.png"),
            format!("{}.png", old.as_str().to_uppercase()),
        ];
        for name in &foreign {
            std::fs::write(dir.join(name), b"x").unwrap();
            age(&dir, name, now, 2 * day);
        }
        // Named like artifacts, but a link and a directory: kept.
        let link = format!("{}.png", JobId::generate());
        std::os::unix::fs::symlink(dir.join("notes.txt"), dir.join(&link)).unwrap();
        let folder = format!("{}.svg", JobId::generate());
        std::fs::create_dir(dir.join(&folder)).unwrap();

        assert_eq!(
            store.sweep(day, now).unwrap(),
            Swept {
                artifacts: 1,
                leftovers: 1,
                failed: 0
            }
        );
        let mut kept: std::collections::BTreeSet<String> = foreign.into_iter().collect();
        kept.extend([format!("{fresh}.svg"), recent_aside, link, folder]);
        assert_eq!(names(&dir), kept);
        assert_eq!(store.sweep(day, now).unwrap(), Swept::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_repeated_put_renews_the_artifacts_age() {
        let (store, dir) = store();
        let job = JobId::generate();
        store.put(&job, OutputKind::Png, b"png!").unwrap();
        let now = SystemTime::now();
        let name = format!("{job}.png");
        age(&dir, &name, now, Duration::from_secs(86_400));
        assert_eq!(
            store.put(&job, OutputKind::Png, b"png!").unwrap(),
            Placed::AlreadyExisted
        );
        let modified = std::fs::metadata(dir.join(&name))
            .unwrap()
            .modified()
            .unwrap();
        assert!(modified + Duration::from_secs(60) > now, "{modified:?}");
        let swept = store
            .sweep(Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        assert_eq!(swept, Swept::default());
        assert_eq!(std::fs::read(dir.join(&name)).unwrap(), b"png!");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tampered_expired_or_missing_signatures_are_refused() {
        let (store, dir) = store();
        let job = JobId::generate();
        store.put(&job, OutputKind::Png, b"png!").unwrap();
        let (id, expires, signature) = query(&store.signed_url(&job, Duration::from_secs(60)).url);
        let later = (expires.parse::<u64>().unwrap() + 3600).to_string();
        let mut flipped = signature.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        for (expires, signature) in [
            (Some(later.as_str()), Some(signature.as_str())),
            (Some(expires.as_str()), Some(flipped.as_str())),
            (Some(expires.as_str()), None),
            (None, Some(signature.as_str())),
            (Some("soon"), Some(signature.as_str())),
            (Some(expires.as_str()), Some("zz")),
        ] {
            assert_eq!(
                store.authorize(&id, expires, signature),
                Err(Refusal::Forbidden)
            );
        }
        let (_, old, old_signature) = query(&store.signed_url(&job, Duration::ZERO).url);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            store.authorize(&id, Some(&old), Some(&old_signature)),
            Err(Refusal::Forbidden),
            "expired"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_job_ids_name_files() {
        let (store, dir) = store();
        for name in ["../etc/passwd", "..%2f..%2fetc%2fpasswd", ".hidden", ""] {
            assert_eq!(
                store.authorize(name, Some("1"), Some("00")),
                Err(Refusal::NotFound)
            );
        }
        let unknown = JobId::generate();
        let (id, expires, signature) =
            query(&store.signed_url(&unknown, Duration::from_secs(60)).url);
        assert_eq!(
            store.authorize(&id, Some(&expires), Some(&signature)),
            Err(Refusal::NotFound)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
