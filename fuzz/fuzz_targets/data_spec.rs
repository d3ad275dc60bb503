//! `--data` SPEC strings: parse, and a parsed spec prints back to one that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use msd::data::DataSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<DataSpec>() {
        let again: DataSpec = spec.to_string().parse().expect("a printed spec parses");
        assert_eq!(again, spec);
    }
});
