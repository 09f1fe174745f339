//! What the fuzz targets share (each target includes this file as a module).

/// libfuzzer-sys aborts on every panic, even one that would be caught. `parse_mail` catches
/// panics raised inside mail-parser (its `debug_assert!`s fire on some malformed multiparts when
/// debug assertions are on, as they are by default under cargo-fuzz) and turns them into
/// "not a mail", so those must unwind to that guard here as they do in production. Any other
/// panic still aborts and is reported as a crash.
pub fn let_mail_parser_panics_unwind() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_mail_parser = info
            .location()
            .is_some_and(|l| l.file().contains("/mail-parser-"));
        if !in_mail_parser {
            abort_hook(info);
        }
    }));
}
