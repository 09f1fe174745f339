//! Finding reports in a mail: MIME walk (mail-parser), byte sniffing (zip, gzip, zlib, XML after an
//! optional BOM; headers and file names are only hints), bounded decompression (flate2, zip).
//! Owned by the extraction work; [`crate::mail::parse_mail`] composes it with [`crate::report`].
