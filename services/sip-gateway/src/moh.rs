//! Music on hold, generated at start (nothing to license, nothing to ship): a slow arpeggio of
//! soft tones (C major, 262-523 Hz) with a fade on each note, 8 kHz, kept encoded in both
//! G.711 laws. Its notes are far from the test tones (697-1633 Hz), so a test can tell music
//! from a party's voice.

use audio_codec_algorithms::{encode_alaw, encode_ulaw};

use crate::sdp::Codec;

/// The notes of the loop, in Hz, each 400 ms.
pub const NOTES: [f64; 8] = [261.63, 329.63, 392.0, 523.25, 392.0, 329.63, 261.63, 196.0];
const NOTE_SAMPLES: usize = 3200;

/// The loop, encoded.
pub struct Music {
    ulaw: Vec<u8>,
    alaw: Vec<u8>,
}

impl Music {
    pub fn generate() -> Self {
        let mut pcm = Vec::with_capacity(NOTES.len() * NOTE_SAMPLES);
        for f in NOTES {
            for i in 0..NOTE_SAMPLES {
                let t = i as f64 / 8000.0;
                // Rise over 20 ms, fall to the end of the note: no clicks between notes.
                let env =
                    (i as f64 / 160.0).min(1.0) * (1.0 - i as f64 / NOTE_SAMPLES as f64).powf(0.7);
                let v = (2.0 * std::f64::consts::PI * f * t).sin() * 0.25
                    + (4.0 * std::f64::consts::PI * f * t).sin() * 0.05;
                pcm.push((v * env * i16::MAX as f64) as i16);
            }
        }
        Self {
            ulaw: pcm.iter().map(|s| encode_ulaw(*s)).collect(),
            alaw: pcm.iter().map(|s| encode_alaw(*s)).collect(),
        }
    }

    /// Samples in the loop (a multiple of 160).
    pub fn len(&self) -> usize {
        self.ulaw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ulaw.is_empty()
    }

    /// 20 ms (160 samples) from `pos`.
    pub fn frame(&self, codec: Codec, pos: usize) -> Vec<u8> {
        let src = match codec {
            Codec::Pcmu => &self.ulaw,
            Codec::Pcma => &self.alaw,
        };
        let pos = pos % src.len();
        src[pos..pos + 160].to_vec()
    }
}
