//! Branch and tag naming rules.

use crate::backend::Error;

/// The name of the root branch.
pub const MAIN: &str = "main";

/// Check a branch name: 1-100 bytes of ASCII letters, digits, `_`, `-`,
/// `.`; not starting with `.`, not ending with `.lock`; not `main` (which
/// always exists).
///
/// # Errors
/// [`Error::InvalidName`].
///
/// # Example
/// ```
/// use lancebranch::branched::validate_branch_name;
/// assert!(validate_branch_name("what-if_2").is_ok());
/// assert!(validate_branch_name("main").is_err());
/// assert!(validate_branch_name("a/b").is_err());
/// ```
pub fn validate_branch_name(name: &str) -> Result<(), Error> {
    check("branch", name)?;
    if name == MAIN {
        return Err(Error::InvalidName {
            kind: "branch",
            name: name.into(),
            reason: "\"main\" is the root branch and always exists".into(),
        });
    }
    Ok(())
}

/// Check a tag name (the same rules as branch names; `main` is allowed).
///
/// # Errors
/// [`Error::InvalidName`].
///
/// # Example
/// ```
/// assert!(lancebranch::branched::validate_tag_name("v1.0").is_ok());
/// assert!(lancebranch::branched::validate_tag_name("").is_err());
/// ```
pub fn validate_tag_name(name: &str) -> Result<(), Error> {
    check("tag", name)
}

fn check(kind: &'static str, name: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            kind,
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() || name.len() > 100 {
        return bad("must be 1 to 100 bytes long");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return bad(&format!("character {c:?} is not allowed"));
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if name.ends_with(".lock") {
        return bad("must not end with \".lock\"");
    }
    Ok(())
}
