//! PNG/JPEG decoding as the image-folder loader does it (with and without --size).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, bytes)) = data.split_first() else {
        return;
    };
    let size = (flag & 1 == 1).then_some(usize::from(flag >> 1) + 1);
    let _ = msd::data::decode_image(bytes, std::path::Path::new("fuzz.png"), size);
});
