//! The few values read from S3's XML answers (`Key`, `IsTruncated`,
//! `NextContinuationToken`, an error's `Code` and `Message`). These answers
//! are flat and their elements never nest in themselves, so a scan for the
//! tag is enough; a full XML parser would be a dependency for five tags.

/// The text of every `<tag>…</tag>`, entities decoded.
pub fn values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = vec![];
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    found
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key_of_a_listing_and_its_continuation() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated><NextContinuationToken>tok&amp;en</NextContinuationToken><Contents><Key>p/a&amp;b.json</Key><Size>3</Size></Contents><Contents><Key>p/c.dump</Key></Contents></ListBucketResult>"#;
        assert_eq!(values(body, "Key"), ["p/a&b.json", "p/c.dump"]);
        assert_eq!(values(body, "IsTruncated"), ["true"]);
        assert_eq!(values(body, "NextContinuationToken"), ["tok&en"]);
        assert!(values(body, "Code").is_empty());
    }
}
