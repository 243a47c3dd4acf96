//! Stand-in for the DeOldify image-colorization API.
//!
//! `colorgate demo` and the test suite use this as the upstream behind the
//! gateway, so it speaks the same contract as the real service:
//!
//! - `POST /colorize` with a multipart/form-data field `image` (PNG or JPEG)
//!   → 200 `{"success":true,"output_img_base64":"<PNG base64>"}`;
//!   a bad image, missing field or non-multipart body → 400
//!   `{"success":false,"error":"..."}`; another method → 405.
//! - `GET /health` → 200 `{"status":"ok"}`.
//! - anything else → 404 `{"success":false,"error":"not found"}`.
//!
//! The colorization is honest but simple: every pixel's luminance is kept and
//! a hue picked by luminance (shadows deep blue/purple, midtones brown/skin/
//! green, highlights yellow/sky) is added on top, so a grayscale photo comes
//! back clearly colored with its structure intact. The HTTP server lives
//! elsewhere; this module is the pure request handler plus helpers.

use std::io::Cursor;

use base64::Engine as _;
use bytes::Bytes;
use image::codecs::png::PngEncoder;
use image::{
    DynamicImage, ExtendedColorType, GrayImage, ImageDecoder, ImageEncoder, ImageReader, Limits,
};
use serde_json::json;

/// Largest decoded image accepted, in pixels. Header dimensions are checked
/// before any pixel buffer exists, so a decompression bomb costs nothing.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Mean `|r-g| + |g-b|` above which [`is_colorful`] calls an image colored.
/// Re-encoding noise in a gray image stays far below this; our tint is far above.
pub const COLORFUL_THRESHOLD: f64 = 12.0;

/// How strongly the tint's chroma is applied (1.0 = the palette's full chroma).
const TINT_STRENGTH: f32 = 0.9;

/// Palette stops by luminance; between stops the hue is interpolated linearly.
const STOPS: [(u8, [u8; 3]); 7] = [
    (0, [30, 0, 90]),       // deep blue/purple shadows
    (60, [70, 20, 140]),    // purple-blue
    (110, [150, 90, 40]),   // brown
    (150, [220, 150, 110]), // skin
    (180, [110, 170, 60]),  // foliage green
    (215, [250, 220, 90]),  // yellow highlights
    (255, [140, 200, 255]), // sky
];

/// An HTTP answer: status code and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Always a JSON document.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Self {
        Reply {
            status,
            body: value.to_string().into_bytes(),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, json!({"success": false, "error": message.into()}))
    }
}

/// Handles one request. `path` excludes the query string; `content_type` is
/// the raw Content-Type header; `body` is the whole request body.
pub async fn handle(method: &str, path: &str, content_type: Option<&str>, body: Bytes) -> Reply {
    match (path, method) {
        ("/health", "GET" | "HEAD") => Reply::json(200, json!({"status": "ok"})),
        ("/colorize", "POST") => match read_image_field(content_type, body).await {
            Ok(image) => match colorize(&image) {
                Ok(png) => Reply::json(
                    200,
                    json!({
                        "success": true,
                        "output_img_base64": base64::engine::general_purpose::STANDARD.encode(png),
                    }),
                ),
                Err(e) => Reply::error(400, e),
            },
            Err(e) => Reply::error(400, e),
        },
        ("/health" | "/colorize", _) => Reply::error(405, "method not allowed"),
        _ => Reply::error(404, "not found"),
    }
}

/// Pulls the bytes of the `image` field out of a multipart/form-data body.
async fn read_image_field(content_type: Option<&str>, body: Bytes) -> Result<Bytes, String> {
    let content_type = content_type.ok_or("missing Content-Type: expected multipart/form-data")?;
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| format!("expected multipart/form-data with a boundary: {e}"))?;
    let stream = futures_util::stream::once(async { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    // Fields other than `image` are skipped; multer drains them on next_field.
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("malformed multipart body: {e}"))?
    {
        if field.name() == Some("image") {
            return field
                .bytes()
                .await
                .map_err(|e| format!("malformed multipart body: {e}"));
        }
    }
    Err("missing multipart field \"image\"".to_string())
}

/// Decodes a PNG or JPEG with size limits; the format is sniffed from the
/// bytes because uploads' declared types are unreliable.
fn decode_limited(bytes: &[u8]) -> Result<DynamicImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    if reader.format().is_none() {
        return Err("not a PNG or JPEG image".to_string());
    }
    let mut limits = Limits::default();
    // Backstop for the decoder's own buffers: 8 bytes/pixel covers 16-bit RGBA.
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| format!("invalid image: {e}"))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "image too large: {w}x{h} exceeds {MAX_PIXELS} pixels"
        ));
    }
    DynamicImage::from_decoder(decoder).map_err(|e| format!("invalid image: {e}"))
}

/// The tint for every luminance, computed once per call (256 entries) so the
/// per-pixel work is a table lookup. Each entry keeps luminance `l` exactly
/// (before clamping) and adds the palette's chroma at that luminance.
fn tint_table() -> [[u8; 3]; 256] {
    let mut table = [[0u8; 3]; 256];
    for (l, entry) in table.iter_mut().enumerate() {
        let l = l as f32;
        let i = STOPS
            .windows(2)
            .position(|w| l <= f32::from(w[1].0))
            .unwrap_or(STOPS.len() - 2);
        let ((l0, c0), (l1, c1)) = (STOPS[i], STOPS[i + 1]);
        let t = ((l - f32::from(l0)) / f32::from(l1 - l0)).clamp(0.0, 1.0);
        let c: [f32; 3] =
            std::array::from_fn(|k| f32::from(c0[k]) + (f32::from(c1[k]) - f32::from(c0[k])) * t);
        let luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        for k in 0..3 {
            entry[k] = (l + TINT_STRENGTH * (c[k] - luma))
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    table
}

/// Colorizes a PNG or JPEG image and returns a PNG of the same dimensions.
/// Already-colored input is colorized from its luminance alone.
pub fn colorize(image_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let gray = decode_limited(image_bytes)?.into_luma8();
    let (w, h) = gray.dimensions();
    let table = tint_table();
    let mut rgb = Vec::with_capacity(gray.as_raw().len() * 3);
    rgb.extend(gray.as_raw().iter().flat_map(|&l| table[usize::from(l)]));
    encode_png(&rgb, w, h, ExtendedColorType::Rgb8)
}

fn encode_png(pixels: &[u8], w: u32, h: u32, color: ExtendedColorType) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(pixels, w, h, color)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(out)
}

/// A grayscale PNG (diagonal gradient, a bright disc, a dark bar, stripes) for
/// the demo and tests, so no image file has to ship. Zero sizes become 1.
pub fn sample_grayscale_png(width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width.max(1), height.max(1));
    let (fw, fh) = (w as f32, h as f32);
    let img = GrayImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / fw, y as f32 / fh);
        let (dx, dy) = (fx - 0.65, fy - 0.4);
        let v = if dx * dx + dy * dy < 0.04 {
            235.0 // disc: highlights
        } else if (0.1..0.45).contains(&fx) && (0.6..0.8).contains(&fy) {
            25.0 // bar: shadows
        } else if fy > 0.85 && (x / 4) % 2 == 0 {
            128.0 // stripes: midtones
        } else {
            (fx + fy) * 0.5 * 255.0 // gradient: every luminance
        };
        image::Luma([v as u8])
    });
    // Encoding a valid in-memory L8 buffer cannot fail.
    encode_png(img.as_raw(), w, h, ExtendedColorType::L8).expect("in-memory PNG encoding")
}

/// Whether a PNG/JPEG is visibly colored: mean `|r-g| + |g-b|` over all
/// pixels above [`COLORFUL_THRESHOLD`].
pub fn is_colorful(png: &[u8]) -> Result<bool, String> {
    let rgb = decode_limited(png)?.into_rgb8();
    let pixels = rgb.as_raw().chunks_exact(3);
    let count = pixels.len().max(1) as f64;
    let sum: u64 = pixels
        .map(|p| u64::from(p[0].abs_diff(p[1])) + u64::from(p[1].abs_diff(p[2])))
        .sum();
    Ok(sum as f64 / count > COLORFUL_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "cgboundary42";

    fn multipart(name: &str, data: &[u8]) -> (String, Bytes) {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        (
            format!("multipart/form-data; boundary={BOUNDARY}"),
            Bytes::from(body),
        )
    }

    fn parse(reply: &Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).expect("reply body is JSON")
    }

    fn dims(png: &[u8]) -> (u32, u32) {
        image::load_from_memory(png)
            .expect("decodes")
            .into_rgb8()
            .dimensions()
    }

    #[test]
    fn sample_is_grayscale_and_sized() {
        let png = sample_grayscale_png(64, 48);
        assert_eq!(dims(&png), (64, 48));
        assert!(!is_colorful(&png).unwrap());
    }

    #[tokio::test]
    async fn grayscale_sample_comes_back_colorful_with_same_dimensions() {
        let (ct, body) = multipart("image", &sample_grayscale_png(120, 80));
        let reply = handle("POST", "/colorize", Some(&ct), body).await;
        assert_eq!(reply.status, 200);
        let v = parse(&reply);
        assert_eq!(v["success"], true);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["output_img_base64"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        assert_eq!(dims(&png), (120, 80));
        assert!(is_colorful(&png).unwrap());
    }

    #[test]
    fn jpeg_input_works() {
        let gray = image::load_from_memory(&sample_grayscale_png(50, 30)).unwrap();
        let mut jpeg = Vec::new();
        gray.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let png = colorize(&jpeg).unwrap();
        assert_eq!(dims(&png), (50, 30));
        assert!(is_colorful(&png).unwrap());
    }

    #[tokio::test]
    async fn garbage_bytes_get_400() {
        let (ct, body) = multipart("image", b"definitely not an image");
        let reply = handle("POST", "/colorize", Some(&ct), body).await;
        assert_eq!(reply.status, 400);
        assert_eq!(parse(&reply)["success"], false);
    }

    #[tokio::test]
    async fn missing_image_field_gets_400() {
        let (ct, body) = multipart("picture", &sample_grayscale_png(8, 8));
        let reply = handle("POST", "/colorize", Some(&ct), body).await;
        assert_eq!(reply.status, 400);
        let v = parse(&reply);
        assert_eq!(v["success"], false);
        assert!(v["error"].as_str().unwrap().contains("image"));
    }

    #[tokio::test]
    async fn bad_content_type_gets_400() {
        let body = Bytes::from_static(b"{}");
        for ct in [Some("application/json"), None] {
            let reply = handle("POST", "/colorize", ct, body.clone()).await;
            assert_eq!(reply.status, 400);
            assert_eq!(parse(&reply)["success"], false);
        }
    }

    #[tokio::test]
    async fn truncated_multipart_gets_400() {
        let (ct, body) = multipart("image", &sample_grayscale_png(8, 8));
        let reply = handle("POST", "/colorize", Some(&ct), body.slice(..40)).await;
        assert_eq!(reply.status, 400);
    }

    #[test]
    fn decompression_bomb_is_refused() {
        // A valid PNG whose header claims 100000x100000 pixels.
        let mut png = sample_grayscale_png(1, 1);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = colorize(&png).unwrap_err();
        assert!(err.contains("too large") || err.contains("limit"), "{err}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[tokio::test]
    async fn health_is_ok() {
        let reply = handle("GET", "/health", None, Bytes::new()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(parse(&reply), json!({"status": "ok"}));
    }

    #[tokio::test]
    async fn wrong_method_on_colorize_gets_405() {
        let reply = handle("GET", "/colorize", None, Bytes::new()).await;
        assert_eq!(reply.status, 405);
        assert_eq!(parse(&reply)["success"], false);
    }

    #[tokio::test]
    async fn unknown_path_gets_404() {
        let reply = handle("GET", "/nope", None, Bytes::new()).await;
        assert_eq!(reply.status, 404);
        assert_eq!(
            parse(&reply),
            json!({"success": false, "error": "not found"})
        );
    }
}
