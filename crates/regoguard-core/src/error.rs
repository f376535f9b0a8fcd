//! The one error type of the core. Only `bindings/errors.rs` turns it into Python exceptions.

use std::fmt;

/// One failure in one policy file, located as precisely as regorus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    /// The path as the user gave it (joined with the relative path inside a folder).
    pub file: String,
    /// 1-based line, 0 when regorus gave no location.
    pub line: u32,
    /// 1-based column, 0 when regorus gave no location.
    pub column: u32,
    /// OPA's error code: `rego_parse_error` or `rego_compile_error`.
    pub code: &'static str,
    /// The message without location, e.g. `unexpected token`.
    pub message: String,
    /// regorus's snippet with the source line and a caret (may be empty).
    pub snippet: String,
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.code, self.message
        )?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

/// Where an evaluation failed; the message never carries input values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalFailure {
    pub entrypoint: String,
    pub message: String,
    /// The id of the failed decision (`None` outside a decision, e.g. an unknown entrypoint at
    /// construction), so a 500's error id finds the decision-log record.
    pub decision_id: Option<crate::id::DecisionId>,
}

/// Every failure the core can report.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Parse or compile failures, one per broken spot, in file order.
    #[error("{}", join_issues(.0))]
    Policy(Vec<PolicyIssue>),
    /// A base document that cannot be read, parsed, or merged.
    #[error("{0}")]
    Data(String),
    /// A runtime failure of the entrypoint (conflict, undefined entrypoint, bad result shape).
    #[error("{}: {}", .0.entrypoint, .0.message)]
    Evaluation(EvalFailure),
    /// An invalid argument to a constructor or method.
    #[error("{0}")]
    Config(String),
    /// An input value with no JSON form; `path` names it, e.g. `input.user.roles[2]`.
    #[error("{path}: {message}")]
    Input { path: String, message: String },
}

fn join_issues(issues: &[PolicyIssue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&issue.to_string());
    }
    out
}

impl Error {
    #[cold]
    pub fn evaluation(entrypoint: &str, message: impl Into<String>) -> Self {
        Error::Evaluation(EvalFailure {
            entrypoint: entrypoint.to_owned(),
            message: message.into(),
            decision_id: None,
        })
    }

    /// Names the decision an evaluation error belongs to (other errors are returned as they are).
    #[cold]
    #[must_use]
    pub fn in_decision(mut self, id: crate::id::DecisionId) -> Self {
        if let Error::Evaluation(f) = &mut self {
            f.decision_id = Some(id);
        }
        self
    }

    #[cold]
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    #[cold]
    pub fn data(message: impl Into<String>) -> Self {
        Error::Data(message.into())
    }
}

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Splits regorus's located message (`\n--> file:line:col\n  |\n12 | text\n  |    ^\nerror: msg`)
/// into its parts. Anything that does not have that shape comes back whole as the message.
pub(crate) fn issue_from_regorus(
    err: &anyhow_like::ErrorText,
    fallback_file: &str,
    code: &'static str,
) -> PolicyIssue {
    let text = err.0.as_str();
    let mut issue = PolicyIssue {
        file: fallback_file.to_owned(),
        line: 0,
        column: 0,
        code,
        message: text.trim().to_owned(),
        snippet: String::new(),
    };
    let Some(start) = text.find("--> ") else {
        return issue;
    };
    let rest = &text[start + 4..];
    let (loc, after) = rest.split_once('\n').unwrap_or((rest, ""));
    // `file:line:col`: the file itself may contain ':', so split from the right.
    let mut parts = loc.rsplitn(3, ':');
    let col = parts.next().and_then(|c| c.trim().parse::<u32>().ok());
    let line = parts.next().and_then(|l| l.trim().parse::<u32>().ok());
    let file = parts.next();
    if let (Some(col), Some(line), Some(file)) = (col, line, file) {
        issue.file = file.to_owned();
        issue.line = line;
        issue.column = col;
    }
    // The last line is `kind: message`; everything between is the snippet with the caret.
    let after = after.trim_end();
    let (snippet, last) = after.rsplit_once('\n').unwrap_or(("", after));
    let message = last.split_once(": ").map_or(last, |(_, m)| m);
    issue.message = message.trim().to_owned();
    // Text before the `-->` (regorus sometimes prefixes context) is kept with the message.
    let prefix = text[..start].trim();
    if !prefix.is_empty() && !issue.message.contains(prefix) {
        issue.message = format!("{prefix}: {}", issue.message);
    }
    issue.snippet = snippet.to_owned();
    issue
}

/// regorus reports `anyhow::Error`; we keep only its rendered text so the core error stays
/// `Clone` and `Send + Sync` without depending on anyhow.
pub(crate) mod anyhow_like {
    pub struct ErrorText(pub String);

    impl ErrorText {
        pub fn of(err: &impl std::fmt::Display) -> Self {
            // `{:#}` on anyhow prints the whole cause chain on one line.
            ErrorText(format!("{err:#}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_regorus_location() {
        let text = "\n--> policies/authz.rego:3:7\n  |\n3 | allow if {\n  |       ^\nerror: unexpected token";
        let issue = issue_from_regorus(
            &anyhow_like::ErrorText(text.into()),
            "x",
            "rego_parse_error",
        );
        assert_eq!(issue.file, "policies/authz.rego");
        assert_eq!((issue.line, issue.column), (3, 7));
        assert_eq!(issue.message, "unexpected token");
        assert_eq!(
            issue.to_string().lines().next(),
            Some("policies/authz.rego:3:7: rego_parse_error: unexpected token")
        );
        assert!(issue.snippet.contains('^'));
    }

    #[test]
    fn unlocated_message_is_kept_whole() {
        let issue = issue_from_regorus(
            &anyhow_like::ErrorText("boom".into()),
            "a.rego",
            "rego_compile_error",
        );
        assert_eq!(issue.to_string(), "a.rego:0:0: rego_compile_error: boom");
    }
}
