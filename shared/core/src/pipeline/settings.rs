//! Every setting of the pipeline in one struct, filled from CLI flags, `DMARC_*` environment
//! variables or Lambda environment. Names are the seed tool's flag names (`-maxrecords`, …); the
//! environment variable of a flag is `DMARC_` + its upper-cased name.

use crate::limits::Limits;
use crate::mail::ParseOptions;
use crate::writer::Format;

/// All pipeline settings. Build with [`Settings::default`], change fields (or use [`Settings::set`]
/// by flag name), then call [`Settings::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `-bucket`: the data bucket (staging, state, output, quarantine).
    pub bucket: String,
    pub bucketregion: String,
    /// `-sqs`: the queue URL or name.
    pub sqs: String,
    pub sqsregion: String,
    /// `-deletesqs`: delete handled messages (false only for dry runs).
    pub deletesqs: bool,
    /// `-emptypolls`: stop draining after this many consecutive empty polls (>= 1).
    pub emptypolls: u32,
    /// `-maxrecords`: output files hold at most `maxrecords * 1024` rows.
    pub maxrecords: u32,
    /// `-move`: archive prefix for processed mails (`""` = leave them where they are).
    pub move_prefix: String,
    /// `-archiveformat`: how `-move` archives mails: one object per mail, or one bundle per batch.
    pub archiveformat: ArchiveFormat,
    /// `-pollmessages`: messages per receive (1-10).
    pub pollmessages: u32,
    /// `-polltimeout`: long-poll seconds (1-20).
    pub polltimeout: u32,
    /// `-sqsprocessingtime`: visibility timeout in seconds for received messages.
    pub sqsprocessingtime: u32,
    pub excludedispositionnone: bool,
    pub verbose: bool,
    pub incomingprefix: String,
    pub stagingprefix: String,
    pub stateprefix: String,
    pub outputprefix: String,
    pub quarantineprefix: String,
    pub format: Format,
    /// Largest raw mail accepted (bytes).
    pub maxmailbytes: u64,
    /// Largest decompressed attachment (bytes).
    pub maxattachmentbytes: u64,
    /// Rows read by one compaction call (a bounded piece of one partition).
    pub compactrows: u64,
    /// Messages gathered (over several polls) before their mails are staged together: one staged
    /// object per partition per batch, so larger batches mean fewer, larger staged objects (fewer
    /// PUTs, fuller compaction pieces). Messages stay invisible (`sqsprocessingtime`) meanwhile.
    pub stagebatch: u32,
    /// gzip level of staged objects (0-9). Staged rows live minutes: 1 keeps S3 transfers
    /// small; 0 (what `local` uses) spends no CPU on bytes that never leave the disk.
    pub stagecompression: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = Limits::default();
        Settings {
            bucket: String::new(),
            bucketregion: String::new(),
            sqs: String::new(),
            sqsregion: String::new(),
            deletesqs: true,
            emptypolls: 3,
            maxrecords: 32,
            move_prefix: String::new(),
            archiveformat: ArchiveFormat::Mail,
            pollmessages: 10,
            polltimeout: 10,
            sqsprocessingtime: 3600,
            excludedispositionnone: false,
            verbose: false,
            incomingprefix: "incoming/".into(),
            stagingprefix: "staging/".into(),
            stateprefix: "state/".into(),
            outputprefix: "dmarc/".into(),
            quarantineprefix: "quarantine/".into(),
            format: Format::Tsv,
            maxmailbytes: limits.max_mail_bytes,
            maxattachmentbytes: limits.max_attachment_bytes,
            compactrows: 262_144,
            stagebatch: 100,
            stagecompression: 1,
        }
    }
}

/// How archiving (`-move`) keeps processed mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// The seed's behaviour: each mail copied to `<move>/<YYYYMMDD>/<key>`, then deleted. One S3
    /// COPY per mail ($5 per million).
    #[default]
    Mail,
    /// One gzipped mbox per staged batch, `<move>/<YYYYMMDD>/<batch>.mbox.gz`, built from GETs of
    /// the mails ($0.40 per million) and one PUT per batch.
    Mbox,
}

impl ArchiveFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::Mail => "mail",
            ArchiveFormat::Mbox => "mbox",
        }
    }
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mail" => Ok(ArchiveFormat::Mail),
            "mbox" => Ok(ArchiveFormat::Mbox),
            other => Err(format!("unknown archive format {other:?} (mail or mbox)")),
        }
    }
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A setting with a value outside what it allows. Permanent (a configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting -{setting} (env DMARC_{env}): {value:?}: {allowed}")]
pub struct SettingsError {
    /// The flag name, e.g. `maxrecords`.
    pub setting: &'static str,
    env: String,
    pub value: String,
    /// What is allowed, e.g. `an integer from 1 to 10`.
    pub allowed: String,
}

impl SettingsError {
    fn new(setting: &'static str, value: impl ToString, allowed: impl Into<String>) -> Self {
        SettingsError {
            setting,
            env: setting.to_ascii_uppercase(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

const MAX_VISIBILITY_SECONDS: u32 = 43_200;

impl Settings {
    /// Every flag name [`Settings::set`] accepts, in documentation order.
    pub const FLAGS: &'static [&'static str] = &[
        "bucket",
        "bucketregion",
        "sqs",
        "sqsregion",
        "deletesqs",
        "emptypolls",
        "maxrecords",
        "move",
        "archiveformat",
        "pollmessages",
        "polltimeout",
        "sqsprocessingtime",
        "excludedispositionnone",
        "verbose",
        "incomingprefix",
        "stagingprefix",
        "stateprefix",
        "outputprefix",
        "quarantineprefix",
        "format",
        "maxmailbytes",
        "maxattachmentbytes",
        "compactrows",
        "stagebatch",
        "stagecompression",
    ];

    /// The environment variable of a flag: `DMARC_` + upper-case name.
    pub fn env_name(flag: &str) -> String {
        format!("DMARC_{}", flag.to_ascii_uppercase())
    }

    /// Sets one setting from its text form, by flag name. Booleans accept
    /// `true/false/1/0/yes/no/on/off`. Range checks are done by [`Settings::validate`].
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), SettingsError> {
        let name = Self::FLAGS
            .iter()
            .copied()
            .find(|f| *f == flag)
            .ok_or_else(|| {
                SettingsError::new(
                    "unknown",
                    flag,
                    format!("one of {}", Self::FLAGS.join(", ")),
                )
            })?;
        let v = value.trim();
        match name {
            "bucket" => self.bucket = v.into(),
            "bucketregion" => self.bucketregion = v.into(),
            "sqs" => self.sqs = v.into(),
            "sqsregion" => self.sqsregion = v.into(),
            "deletesqs" => self.deletesqs = parse_bool(name, v)?,
            "emptypolls" => self.emptypolls = parse_num(name, v)?,
            "maxrecords" => self.maxrecords = parse_num(name, v)?,
            "move" => self.move_prefix = v.into(),
            "archiveformat" => {
                self.archiveformat = v
                    .parse()
                    .map_err(|_| SettingsError::new(name, v, "mail or mbox"))?
            }
            "pollmessages" => self.pollmessages = parse_num(name, v)?,
            "polltimeout" => self.polltimeout = parse_num(name, v)?,
            "sqsprocessingtime" => self.sqsprocessingtime = parse_num(name, v)?,
            "excludedispositionnone" => self.excludedispositionnone = parse_bool(name, v)?,
            "verbose" => self.verbose = parse_bool(name, v)?,
            "incomingprefix" => self.incomingprefix = v.into(),
            "stagingprefix" => self.stagingprefix = v.into(),
            "stateprefix" => self.stateprefix = v.into(),
            "outputprefix" => self.outputprefix = v.into(),
            "quarantineprefix" => self.quarantineprefix = v.into(),
            "format" => {
                self.format = v
                    .parse()
                    .map_err(|_| SettingsError::new(name, v, "tsv or csv"))?
            }
            "maxmailbytes" => self.maxmailbytes = parse_num(name, v)?,
            "maxattachmentbytes" => self.maxattachmentbytes = parse_num(name, v)?,
            "compactrows" => self.compactrows = parse_num(name, v)?,
            "stagebatch" => self.stagebatch = parse_num(name, v)?,
            "stagecompression" => self.stagecompression = parse_num(name, v)?,
            _ => return Err(SettingsError::new("unknown", flag, "a known flag")),
        }
        Ok(())
    }

    /// Applies every `DMARC_<FLAG>` variable that `lookup` knows (e.g. `|k| std::env::var(k).ok()`),
    /// then validates.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        for flag in Self::FLAGS {
            if let Some(v) = lookup(&Self::env_name(flag)) {
                s.set(flag, &v)?;
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks every range; the error names the setting and what it allows.
    pub fn validate(&self) -> Result<(), SettingsError> {
        range("emptypolls", self.emptypolls.into(), 1, 1_000)?;
        range("maxrecords", self.maxrecords.into(), 1, 1_000_000)?;
        range("pollmessages", self.pollmessages.into(), 1, 10)?;
        range("polltimeout", self.polltimeout.into(), 1, 20)?;
        range(
            "sqsprocessingtime",
            self.sqsprocessingtime.into(),
            1,
            MAX_VISIBILITY_SECONDS.into(),
        )?;
        range("maxmailbytes", self.maxmailbytes, 1, 5 << 30)?;
        range("maxattachmentbytes", self.maxattachmentbytes, 1, 16 << 30)?;
        range("compactrows", self.compactrows, 1, 100_000_000)?;
        range("stagebatch", self.stagebatch.into(), 1, 10_000)?;
        range("stagecompression", self.stagecompression.into(), 0, 9)?;
        let prefixes = [
            ("incomingprefix", &self.incomingprefix),
            ("stagingprefix", &self.stagingprefix),
            ("stateprefix", &self.stateprefix),
            ("outputprefix", &self.outputprefix),
            ("quarantineprefix", &self.quarantineprefix),
        ];
        for (name, p) in prefixes {
            if p.is_empty() || !p.ends_with('/') || p.starts_with('/') || p.contains("//") {
                return Err(SettingsError::new(
                    name,
                    p,
                    "a non-empty key prefix ending with '/', not starting with '/'",
                ));
            }
        }
        // Pipeline-owned prefixes must not contain each other: listing one would see the other's keys.
        let owned = &prefixes[1..];
        for (i, (name, p)) in owned.iter().enumerate() {
            for (other_name, q) in &owned[i + 1..] {
                if p.starts_with(q.as_str()) || q.starts_with(p.as_str()) {
                    return Err(SettingsError::new(
                        name,
                        p,
                        format!("a prefix distinct from -{other_name} ({q}) and not nested in it"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Maximum rows in one output file.
    pub fn rows_per_file(&self) -> u64 {
        u64::from(self.maxrecords.max(1)) * 1024
    }

    /// What `parse_mail` gets.
    pub fn parse_options(&self) -> ParseOptions {
        let limits = Limits {
            max_mail_bytes: self.maxmailbytes,
            max_attachment_bytes: self.maxattachmentbytes,
            ..Limits::default()
        };
        ParseOptions {
            limits,
            exclude_disposition_none: self.excludedispositionnone,
        }
    }
}

fn range(name: &'static str, v: u64, min: u64, max: u64) -> Result<(), SettingsError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(SettingsError::new(
            name,
            v,
            format!("an integer from {min} to {max}"),
        ))
    }
}

fn parse_num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, SettingsError> {
    v.parse()
        .map_err(|_| SettingsError::new(name, v, "a non-negative integer"))
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, SettingsError> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" | "t" => Ok(true),
        "false" | "0" | "no" | "off" | "f" => Ok(false),
        _ => Err(SettingsError::new(name, v, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_defaults_and_valid() {
        let s = Settings::default();
        assert!(s.deletesqs);
        assert_eq!(
            (s.emptypolls, s.maxrecords, s.pollmessages, s.polltimeout),
            (3, 32, 10, 10)
        );
        assert_eq!(s.sqsprocessingtime, 3600);
        assert_eq!(s.rows_per_file(), 32 * 1024);
        s.validate().unwrap();
    }

    #[test]
    fn validation_names_the_setting_and_its_range() {
        let s = Settings {
            pollmessages: 11,
            ..Settings::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.setting, "pollmessages");
        assert!(e.to_string().contains("from 1 to 10"), "{e}");
        assert!(e.to_string().contains("DMARC_POLLMESSAGES"), "{e}");
        let s = Settings {
            emptypolls: 0,
            ..Settings::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "emptypolls");
        let s = Settings {
            stagingprefix: "dmarc/staging/".into(),
            ..Settings::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "stagingprefix");
        let s = Settings {
            outputprefix: "out".into(),
            ..Settings::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "outputprefix");
    }

    #[test]
    fn set_by_flag_name_and_from_env() {
        let s = Settings::from_env(|k| match k {
            "DMARC_MAXRECORDS" => Some("2".into()),
            "DMARC_DELETESQS" => Some("false".into()),
            "DMARC_MOVE" => Some("archive".into()),
            "DMARC_FORMAT" => Some("CSV".into()),
            "DMARC_ARCHIVEFORMAT" => Some("MBOX".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.maxrecords, 2);
        assert!(!s.deletesqs);
        assert_eq!(s.move_prefix, "archive");
        assert_eq!(s.format, Format::Csv);
        assert_eq!(s.archiveformat, ArchiveFormat::Mbox);
        assert_eq!(Settings::default().archiveformat, ArchiveFormat::Mail);
        let e =
            Settings::from_env(|k| (k == "DMARC_ARCHIVEFORMAT").then(|| "zip".into())).unwrap_err();
        assert_eq!(e.setting, "archiveformat");
        let mut s = Settings::default();
        assert_eq!(s.set("maxrecords", "x").unwrap_err().setting, "maxrecords");
        assert!(s.set("nosuchflag", "1").is_err());
        let e = Settings::from_env(|k| (k == "DMARC_POLLTIMEOUT").then(|| "0".into())).unwrap_err();
        assert_eq!(e.setting, "polltimeout");
    }
}
