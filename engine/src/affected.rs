//! Affected: the services a git diff touches, from the merge base (renames and deletions count).
