//! Table naming rules, checked in one place.
//!
//! A table name becomes a directory name (`<name>.lance`) under the store's
//! root, so it must be safe as a single path segment on every platform and
//! accepted by LanceDB. The rules:
//!
//! - 1 to [`MAX_TABLE_NAME_LEN`] bytes;
//! - only ASCII letters, digits, `_`, `-` and `.` (so no `/`, `\`, whitespace
//!   or control characters);
//! - does not start with `.` (no hidden files, no `.` / `..`);
//! - does not start with [`RESERVED_PREFIX`], which lancebranch keeps for its
//!   own bookkeeping (catalog, WAL).

use crate::backend::error::Error;

/// The longest table name accepted, in bytes.
pub const MAX_TABLE_NAME_LEN: usize = 200;

/// Names starting with this prefix belong to lancebranch itself.
pub const RESERVED_PREFIX: &str = "_lancebranch";

/// Check a table name against the rules of this module.
///
/// # Errors
/// [`Error::InvalidName`] naming the broken rule.
///
/// # Example
/// ```
/// use lancebranch::backend::validate_table_name;
/// assert!(validate_table_name("people_v2").is_ok());
/// assert!(validate_table_name("a/b").is_err());
/// assert!(validate_table_name("").is_err());
/// assert!(validate_table_name("_lancebranch_catalog").is_err());
/// ```
pub fn validate_table_name(name: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            kind: "table",
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return bad(&format!("longer than {MAX_TABLE_NAME_LEN} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (use ASCII letters, digits, '_', '-', '.')"
        ));
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if name.starts_with(RESERVED_PREFIX) {
        return bad(&format!("the prefix {RESERVED_PREFIX:?} is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_rule() {
        for bad in [
            "",
            "a/b",
            "a\\b",
            "a b",
            "tab\there",
            "nl\n",
            "\u{7f}",
            ".",
            "..",
            ".hidden",
            "_lancebranch",
            "_lancebranch_wal",
            "caf\u{e9}",
        ] {
            assert!(validate_table_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_table_name(&"x".repeat(MAX_TABLE_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn accepts_ordinary_names() {
        for good in ["a", "vertices", "edges.knows", "t-1", "_private", "A9"] {
            assert!(validate_table_name(good).is_ok(), "{good:?} refused");
        }
    }
}
