//! What became of a file sent to an object store: its status in the state file's manifest, in
//! the upload results (`uploads` stream) and in the plans that name it.

use serde::{Serialize, Serializer};

/// A file's status. The names are the wire's and the state file's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FileStatus {
    /// Being sent: the outcome is not known yet (a run killed now leaves it so).
    Uploading,
    Uploaded,
    /// Already at its key with the same size and SHA-256: nothing sent.
    Present,
    /// Sent over a different object at its key (`--on-conflict overwrite`).
    Overwritten,
    /// A different object is at the key (and overwriting was not asked for).
    Conflict,
    /// The local file is not what was hashed at export.
    Changed,
    /// This file could not be put (the reason says why); others can.
    Failed,
    /// The store does not take this key (the reason says why): nothing was sent.
    Refused,
    /// Deleted by `ferry rollback`.
    RolledBack,
    /// The export could not read it: never sent.
    Unreadable,
    /// Left out on purpose by the export: a symbolic link, not followed.
    SkippedSymlink,
    /// Left out on purpose by the export: not a regular file (a socket, pipe or device).
    SkippedSpecial,
}

impl FileStatus {
    pub(crate) const ALL: [FileStatus; 12] = [
        FileStatus::Uploading,
        FileStatus::Uploaded,
        FileStatus::Present,
        FileStatus::Overwritten,
        FileStatus::Conflict,
        FileStatus::Changed,
        FileStatus::Failed,
        FileStatus::Refused,
        FileStatus::RolledBack,
        FileStatus::Unreadable,
        FileStatus::SkippedSymlink,
        FileStatus::SkippedSpecial,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FileStatus::Uploading => "uploading",
            FileStatus::Uploaded => "uploaded",
            FileStatus::Present => "present",
            FileStatus::Overwritten => "overwritten",
            FileStatus::Conflict => "conflict",
            FileStatus::Changed => "changed",
            FileStatus::Failed => "failed",
            FileStatus::Refused => "refused",
            FileStatus::RolledBack => "rolled_back",
            FileStatus::Unreadable => "unreadable",
            FileStatus::SkippedSymlink => "skipped-symlink",
            FileStatus::SkippedSpecial => "skipped-special",
        }
    }

    /// The status of this name, if there is one.
    pub(crate) fn parse(name: &str) -> Option<FileStatus> {
        FileStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The object is at the key with the expected bytes.
    pub(crate) fn is_done(self) -> bool {
        matches!(
            self,
            FileStatus::Uploaded | FileStatus::Present | FileStatus::Overwritten
        )
    }

    /// Left out by the export on purpose: a result, not a failure.
    pub(crate) fn is_left_out(self) -> bool {
        matches!(self, FileStatus::SkippedSymlink | FileStatus::SkippedSpecial)
    }
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FileStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_by_its_name_and_an_unknown_name_is_none() {
        for s in FileStatus::ALL {
            assert_eq!(FileStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(FileStatus::parse("skipped-other"), None);
        let done: Vec<&str> = FileStatus::ALL
            .into_iter()
            .filter(|s| s.is_done())
            .map(FileStatus::as_str)
            .collect();
        assert_eq!(done, ["uploaded", "present", "overwritten"]);
    }
}
