//! Command-line flags in the seed Go tool's style, so existing cron lines keep working:
//! `-bucket=x`, `-bucket x`, `--bucket x`, `--bucket=x`, bare `-verbose` for booleans and
//! `-deletesqs=false` (a boolean never consumes the next argument, like Go's `flag` package).
//! Values are returned as text in command-line order; the caller applies and validates them.

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-name` alone means true; a value only with `=`.
    Bool,
    /// `-name value` or `-name=value`.
    Value,
}

/// One accepted flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// `(flag name, value)` in order; later ones win when applied in order.
    pub values: Vec<(&'static str, String)>,
    pub help: bool,
    /// Arguments after `--` or the first non-flag argument (Go stops at it too).
    pub positional: Vec<String>,
}

/// A command line that cannot be understood; the message is for the user (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    Unknown(String),
    MissingValue(&'static str),
}

impl std::fmt::Display for FlagError {
    // Go's `flag` package wording, which seed users may grep their logs for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagError::Unknown(arg) => write!(f, "flag provided but not defined: {arg}"),
            FlagError::MissingValue(name) => write!(f, "flag needs an argument: -{name}"),
        }
    }
}

impl std::error::Error for FlagError {}

pub fn parse(specs: &[Spec], args: &[String]) -> Result<Parsed, FlagError> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            parsed.positional.extend(rest.by_ref().cloned());
            break;
        }
        let Some(body) = flag_body(arg) else {
            parsed.positional.push(arg.clone());
            parsed.positional.extend(rest.by_ref().cloned());
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        if matches!(name, "h" | "help") {
            parsed.help = true;
            continue;
        }
        let spec = find(specs, name).ok_or_else(|| FlagError::Unknown(arg.clone()))?;
        let value = match (spec.kind, inline) {
            (_, Some(value)) => value.to_owned(),
            (Kind::Bool, None) => "true".to_owned(),
            (Kind::Value, None) => rest
                .next()
                .cloned()
                .ok_or(FlagError::MissingValue(spec.name))?,
        };
        parsed.values.push((spec.name, value));
    }
    Ok(parsed)
}

/// `-x`/`--x` without the dashes; `None` for a positional argument (including `-` alone).
fn flag_body(arg: &str) -> Option<&str> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    (!body.is_empty() && !body.starts_with('-')).then_some(body)
}

/// Flag names are matched case-sensitively like Go, but `-move` and `-Move` are not both
/// plausible: accept the ASCII-lowercase spelling too.
fn find<'a>(specs: &'a [Spec], name: &str) -> Option<&'a Spec> {
    specs
        .iter()
        .find(|s| s.name == name)
        .or_else(|| specs.iter().find(|s| s.name.eq_ignore_ascii_case(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec {
            name: "bucket",
            kind: Kind::Value,
        },
        Spec {
            name: "maxrecords",
            kind: Kind::Value,
        },
        Spec {
            name: "verbose",
            kind: Kind::Bool,
        },
        Spec {
            name: "deletesqs",
            kind: Kind::Bool,
        },
    ];

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn values(list: &[&str]) -> Vec<(&'static str, String)> {
        parse(SPECS, &args(list)).unwrap().values
    }

    #[test]
    fn go_and_gnu_spellings_give_the_same_values() {
        let expected = vec![("bucket", "b".to_owned()), ("maxrecords", "4".to_owned())];
        assert_eq!(values(&["-bucket=b", "-maxrecords", "4"]), expected);
        assert_eq!(values(&["--bucket", "b", "--maxrecords=4"]), expected);
        assert_eq!(values(&["-bucket", "b", "-maxrecords=4"]), expected);
    }

    #[test]
    fn booleans_never_take_the_next_argument() {
        assert_eq!(values(&["-verbose"]), vec![("verbose", "true".to_owned())]);
        assert_eq!(
            values(&["-deletesqs=false"]),
            vec![("deletesqs", "false".to_owned())]
        );
        let parsed = parse(SPECS, &args(&["-verbose", "false"])).unwrap();
        assert_eq!(parsed.values, vec![("verbose", "true".to_owned())]);
        assert_eq!(
            parsed.positional,
            args(&["false"]),
            "Go stops at the first non-flag"
        );
    }

    #[test]
    fn values_may_look_like_flags_or_be_empty() {
        assert_eq!(
            values(&["-bucket", "-x"]),
            vec![("bucket", "-x".to_owned())]
        );
        assert_eq!(values(&["-bucket="]), vec![("bucket", String::new())]);
        assert_eq!(values(&["-bucket=a=b"]), vec![("bucket", "a=b".to_owned())]);
    }

    #[test]
    fn help_unknown_and_missing_values() {
        assert!(parse(SPECS, &args(&["-h"])).unwrap().help);
        assert!(parse(SPECS, &args(&["--help"])).unwrap().help);
        assert_eq!(
            parse(SPECS, &args(&["-nosuch=1"])),
            Err(FlagError::Unknown("-nosuch=1".into()))
        );
        assert_eq!(
            parse(SPECS, &args(&["-bucket"])),
            Err(FlagError::MissingValue("bucket"))
        );
        assert_eq!(
            parse(SPECS, &args(&["---bucket=x"])).unwrap().positional,
            args(&["---bucket=x"])
        );
    }

    #[test]
    fn double_dash_ends_flags() {
        let parsed = parse(SPECS, &args(&["-verbose", "--", "-bucket=x"])).unwrap();
        assert_eq!(parsed.values.len(), 1);
        assert_eq!(parsed.positional, args(&["-bucket=x"]));
    }
}
