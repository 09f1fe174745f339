//! Properties of parse_report on hostile input: never panics, never delivers more records than
//! the document has, a document cut anywhere keeps what was complete before the cut, and a
//! damaged document gives the same answer whatever the read window and in place.

mod report_support;

use dmarc_tsv_core::Limits;
use dmarc_tsv_core::report::{
    ReportError, parse_report, parse_report_bytes, parse_report_in_blocks,
};
use proptest::prelude::*;
use report_support::trace;

const RECORDS: usize = 4;

fn sample() -> String {
    let record = "<record><row><source_ip>192.0.2.1</source_ip><count>1</count>\
        <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>\
        </policy_evaluated></row><identifiers><header_from>example.com</header_from></identifiers>\
        <auth_results><dkim><domain>example.com</domain><result>pass</result></dkim>\
        <spf><domain>example.com</domain><result>fail</result></spf></auth_results></record>\n";
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n<report_metadata>\
         <org_name>Org &amp; Co</org_name><report_id>id</report_id><date_range><begin>1700000000</begin>\
         <end>1700086399</end></date_range></report_metadata>\n<policy_published><domain>example.com\
         </domain><p>none</p></policy_published>\n{}</feedback>\n",
        record.repeat(RECORDS)
    )
}

/// Records delivered, or the error.
fn run(bytes: &[u8], limits: &Limits) -> Result<(u64, u64), ReportError> {
    let mut delivered = 0u64;
    let parse = parse_report(bytes, limits, &mut |_, _| {
        delivered += 1;
        Ok(())
    })?;
    assert_eq!(
        parse.records, delivered,
        "records counts what the callback got"
    );
    Ok((delivered, parse.problems.len() as u64))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = run(&bytes, &Limits::default());
    }

    #[test]
    fn a_document_cut_anywhere_keeps_its_complete_records(cut in 0usize..4096) {
        let doc = sample();
        let cut = cut.min(doc.len());
        let complete = doc[..cut].matches("</record>").count() as u64;
        match run(&doc.as_bytes()[..cut], &Limits::default()) {
            Ok((delivered, problems)) => {
                prop_assert_eq!(delivered, complete);
                if cut < doc.trim_end().len() {
                    prop_assert!(problems > 0, "a cut document says so");
                }
            }
            Err(ReportError::Skip(_)) => prop_assert_eq!(complete, 0),
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn flipped_bytes_never_panic_nor_invent_records(
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
    ) {
        let mut doc = sample().into_bytes();
        for (at, byte) in flips {
            let at = at % doc.len();
            doc[at] = byte;
        }
        let limits = Limits { max_field_bytes: 64, max_xml_depth: 8, ..Limits::default() };
        if let Ok((delivered, _)) = run(&doc, &limits) {
            prop_assert!(delivered <= RECORDS as u64);
        }
    }

    #[test]
    fn damaged_documents_give_the_same_answer_in_any_window_and_in_place(
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
        block in 1usize..300,
    ) {
        let mut doc = sample().into_bytes();
        for (at, byte) in flips {
            let at = at % doc.len();
            doc[at] = byte;
        }
        let limits = Limits { max_field_bytes: 64, max_xml_depth: 8, ..Limits::default() };
        let streamed = trace(|on_record| parse_report(doc.as_slice(), &limits, on_record));
        let windowed =
            trace(|on_record| parse_report_in_blocks(doc.as_slice(), &limits, block, on_record));
        let in_place = trace(|on_record| parse_report_bytes(&doc, &limits, on_record));
        prop_assert_eq!(&windowed, &streamed);
        prop_assert_eq!(&in_place, &streamed);
    }
}
