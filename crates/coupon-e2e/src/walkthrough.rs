//! The README's walkthrough as a test reads it: the shell blocks of one
//! section, split into commands, each call with the answer its comment shows.
//!
//! A comment after a command (or a `# →` line right after it) names the HTTP
//! status, optionally an error code (`409 SOLD_OUT`), and JSON fields
//! (`{"couponId":1,...}`); `...` and prose around them are ignored. Every
//! scalar `"key":value` the comment shows must appear in the answer as shown.

use anyhow::{bail, Context};

/// One command of a shell block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The command, continuation lines joined, its comment removed.
    pub command: String,
    /// What the README says it answers; `None` for definitions and
    /// assignments, which only set up the calls after them.
    pub expected: Option<Expected>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub status: u16,
    /// `"key":value` texts the answer's body must contain.
    pub fields: Vec<String>,
    /// The comment as written, for failure messages.
    pub comment: String,
}

/// The ```` ```sh ```` blocks between the heading `## {title}` and the next `## `.
pub fn shell_blocks(markdown: &str, title: &str) -> anyhow::Result<Vec<String>> {
    let heading = format!("## {title}\n");
    let start = markdown.find(&heading).with_context(|| format!("no section {heading:?}"))? + heading.len();
    let section = &markdown[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("```").context("an unclosed shell block")?;
        blocks.push(body[..close].to_string());
        rest = &body[close..];
    }
    Ok(blocks)
}

/// The commands of a block in order; calls (`curl`, or a function the block
/// defines) must carry an expected answer, other commands (e.g. a psql
/// query of the stack's own database) are left out.
pub fn steps(block: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    let mut functions: Vec<String> = Vec::new();
    let mut command = String::new();
    let mut comment = String::new();
    let mut in_quote = false;
    for line in block.lines() {
        if command.is_empty() {
            let trimmed = line.trim_start();
            if let Some(arrow) = trimmed.strip_prefix("# →") {
                let last = steps.last_mut().context("a `# →` line before any command")?;
                last.expected = Some(expected(arrow.trim())?);
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
        }
        let (code, remark) = split_comment(line, &mut in_quote);
        if !command.is_empty() {
            command.push('\n');
        }
        command.push_str(code.trim_end());
        if let Some(remark) = remark {
            comment = remark.to_string();
        }
        if in_quote || command.ends_with('\\') {
            continue;
        }
        let done = std::mem::take(&mut command);
        let remark = std::mem::take(&mut comment);
        let first = done.split_whitespace().next().unwrap_or_default().to_string();
        if let Some(name) = first.strip_suffix("()") {
            functions.push(name.to_string());
            steps.push(Step { command: done, expected: None });
        } else if first.contains('=') {
            steps.push(Step { command: done, expected: None });
        } else if first == "curl" || functions.contains(&first) {
            let expected = if remark.is_empty() { None } else { Some(expected(&remark)?) };
            steps.push(Step { command: done, expected });
        }
    }
    if !command.is_empty() {
        bail!("a command that does not end: {command}");
    }
    if let Some(unchecked) = steps.iter().find(|step| step.expected.is_none() && is_call(step, &functions)) {
        bail!("the README shows no answer for: {}", unchecked.command);
    }
    Ok(steps)
}

fn is_call(step: &Step, functions: &[String]) -> bool {
    let first = step.command.split_whitespace().next().unwrap_or_default();
    first == "curl" || functions.iter().any(|name| name == first)
}

/// Splits a line into code and a trailing `# comment`, outside quotes;
/// `in_quote` carries a single-quoted string over lines.
fn split_comment<'a>(line: &'a str, in_quote: &mut bool) -> (&'a str, Option<&'a str>) {
    let mut in_double = false;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match c {
            '\'' if !in_double => *in_quote = !*in_quote,
            '"' if !*in_quote => in_double = !in_double,
            '#' if !*in_quote && !in_double && previous.is_whitespace() => {
                return (&line[..at], Some(line[at + 1..].trim()));
            }
            _ => {}
        }
        previous = c;
    }
    (line, None)
}

/// Reads `201 {...}`, `409 SOLD_OUT`, `403: prose`, `200, prose`.
fn expected(comment: &str) -> anyhow::Result<Expected> {
    let status: u16 = comment
        .get(..3)
        .and_then(|digits| digits.parse().ok())
        .with_context(|| format!("no HTTP status at the start of the comment {comment:?}"))?;
    let mut fields = scalar_fields(comment);
    let after = comment[3..].trim_start();
    let word: String = after.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
    if word.len() >= 2 {
        fields.push(format!("\"code\":\"{word}\""));
    }
    Ok(Expected { status, fields, comment: comment.to_string() })
}

/// Every `"key":value` in `text` whose value is a string, number or literal.
fn scalar_fields(text: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        let key_end = open + 1 + close + 1;
        let tail = &rest[key_end..];
        if let Some(value) = tail.strip_prefix(':').and_then(scalar) {
            fields.push(format!("{}:{value}", &rest[open..key_end]));
            rest = &tail[1 + value.len()..];
        } else {
            rest = &rest[key_end..];
        }
    }
    fields
}

/// The scalar JSON value `text` starts with.
fn scalar(text: &str) -> Option<&str> {
    if let Some(string) = text.strip_prefix('"') {
        return string.find('"').map(|end| &text[..end + 2]);
    }
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')).unwrap_or(text.len());
    let value = &text[..end];
    let numeric = !value.is_empty() && value.trim_start_matches('-').chars().all(|c| c.is_ascii_digit() || c == '.');
    (numeric || matches!(value, "true" | "false" | "null")).then_some(value)
}

/// Why `body` with `status` is not what `expected` says; `None` when it is.
pub fn mismatch(expected: &Expected, status: u16, body: &str) -> Option<String> {
    if status != expected.status {
        return Some(format!("answered {status}, the README shows {}", expected.status));
    }
    let missing: Vec<&String> = expected.fields.iter().filter(|field| !body.contains(field.as_str())).collect();
    (!missing.is_empty()).then(|| format!("the answer lacks {missing:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = r#"# a comment line
curl -s -X POST localhost:8080/api/v1/coupons -H 'Authorization: Bearer x' \
  -d '{"name":"30% off",
       "totalQuantity":2}'
# → 201 {"id":1,"name":"30% off","discount":{"type":"RATE","percent":30},...}
issue() { curl -s -X POST localhost:8080/x -H "$seven" -d '{}'; echo; }
seven="Authorization: Bearer $(make -s token CUSTOMER=7)"
issue 7     # 409 {"code":"ALREADY_ISSUED",...}
spend redeem '{"orderId":"o-2"}'  # 422 BELOW_MINIMUM
scripts/stack.sh psql -c 'select 1'
curl -s localhost:8080/me -H "$seven"   # 200 [...]: the customer's coupons
"#;

    #[test]
    fn reads_commands_and_their_answers() {
        let steps = steps(BLOCK).unwrap();
        assert_eq!(steps.len(), 5, "{steps:#?}");
        assert!(steps[0].command.ends_with(r#""totalQuantity":2}'"#));
        let created = steps[0].expected.as_ref().unwrap();
        assert_eq!(created.status, 201);
        assert_eq!(created.fields, [r#""id":1"#, r#""name":"30% off""#, r#""type":"RATE""#, r#""percent":30"#]);
        assert_eq!(steps[1].expected, None);
        assert_eq!(steps[2].expected, None);
        let again = steps[3].expected.as_ref().unwrap();
        assert_eq!((again.status, again.fields.clone()), (409, vec![r#""code":"ALREADY_ISSUED""#.to_string()]));
        assert_eq!(steps[4].expected.as_ref().unwrap().fields, Vec::<String>::new());
        assert_eq!(steps[4].expected.as_ref().unwrap().status, 200);
    }

    #[test]
    fn a_call_of_a_defined_function_needs_an_answer() {
        let err = steps("spend() { curl -s x; }\nspend redeem '{}'\n").unwrap_err();
        assert!(err.to_string().contains("no answer"), "{err}");
    }

    #[test]
    fn an_error_code_after_the_status_is_expected() {
        let steps = steps("spend() { curl -s x; }\nspend redeem '{}'  # 422 BELOW_MINIMUM\n").unwrap();
        assert_eq!(steps[1].expected.as_ref().unwrap().fields, [r#""code":"BELOW_MINIMUM""#]);
    }

    #[test]
    fn mismatches_name_the_difference() {
        let expected = expected(r#"201 {"couponId":1,...}"#).unwrap();
        assert_eq!(mismatch(&expected, 201, r#"{"couponId":1,"status":"ISSUED"}"#), None);
        assert!(mismatch(&expected, 503, "{}").unwrap().contains("503"));
        assert!(mismatch(&expected, 201, r#"{"couponId":2}"#).unwrap().contains("couponId"));
    }

    #[test]
    fn finds_the_blocks_of_one_section() {
        let markdown =
            "## A\n```sh\na\n```\n## Try it\ntext\n```sh\nb\n```\nmore\n```sh\nc\n```\n## B\n```sh\nd\n```\n";
        assert_eq!(shell_blocks(markdown, "Try it").unwrap(), ["b\n", "c\n"]);
    }
}
