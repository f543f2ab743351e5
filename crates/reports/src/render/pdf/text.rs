//! The embedded fonts and their glyph advances, so layout can measure, wrap and align text
//! exactly as the PDF will draw it, on any machine.

use skrifa::instance::{LocationRef, Size};
use skrifa::{FontRef, MetadataProvider};

static REGULAR: &[u8] = include_bytes!("../../../fonts/LiberationSans-Regular.ttf");
static BOLD: &[u8] = include_bytes!("../../../fonts/LiberationSans-Bold.ttf");

pub(crate) fn regular_bytes() -> &'static [u8] {
    REGULAR
}

pub(crate) fn bold_bytes() -> &'static [u8] {
    BOLD
}

/// Advance widths at 1 pt of the printable ASCII range, plus a slow path for the rest.
pub(crate) struct Metrics {
    ascii: [[f32; 128]; 2],
    fonts: [FontRef<'static>; 2],
}

impl Metrics {
    pub(crate) fn new() -> Option<Self> {
        let fonts = [FontRef::new(REGULAR).ok()?, FontRef::new(BOLD).ok()?];
        let mut ascii = [[0.0; 128]; 2];
        for (i, font) in fonts.iter().enumerate() {
            for c in 32u8..127 {
                ascii[i][usize::from(c)] = advance(font, char::from(c));
            }
        }
        Some(Self { ascii, fonts })
    }

    /// Width of `text` at `size` pt.
    pub(crate) fn width(&self, text: &str, size: f32, bold: bool) -> f32 {
        let i = usize::from(bold);
        let per_pt: f32 = text
            .chars()
            .map(|c| if (c as u32) < 128 { self.ascii[i][c as usize] } else { advance(&self.fonts[i], c) })
            .sum();
        per_pt * size
    }

    /// `text` cut to fit `max` pt, with an ellipsis when cut.
    pub(crate) fn fit(&self, text: &str, size: f32, bold: bool, max: f32) -> String {
        if self.width(text, size, bold) <= max {
            return text.to_owned();
        }
        let ell = self.width("…", size, bold);
        let mut out = String::new();
        let mut w = 0.0;
        for c in text.chars() {
            let cw = self.width(c.encode_utf8(&mut [0; 4]), size, bold);
            if w + cw + ell > max {
                break;
            }
            w += cw;
            out.push(c);
        }
        out.push('…');
        out
    }

    /// Greedy word wrap into lines of at most `max` pt (a single over-long word is cut).
    pub(crate) fn wrap(&self, text: &str, size: f32, bold: bool, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in text.split_whitespace() {
            let candidate = if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
            if self.width(&candidate, size, bold) <= max || line.is_empty() {
                line = candidate;
            } else {
                lines.push(std::mem::take(&mut line));
                line = word.to_owned();
            }
            if self.width(&line, size, bold) > max {
                lines.push(self.fit(&line, size, bold, max));
                line.clear();
            }
        }
        if !line.is_empty() {
            lines.push(line);
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        lines
    }
}

fn advance(font: &FontRef<'static>, c: char) -> f32 {
    let gid = font.charmap().map(c).unwrap_or_default();
    font.glyph_metrics(Size::new(1.0), LocationRef::default()).advance_width(gid).unwrap_or(0.5)
}
