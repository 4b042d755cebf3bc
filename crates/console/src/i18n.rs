//! Messages from catalogs (Fluent), never strings in templates: bokmål by default and
//! English, chosen by the person's switch (the `vern_lang` cookie), else by the
//! browser's `Accept-Language`.

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use unic_langid::{LanguageIdentifier, langid};

/// The cookie the language switch sets.
pub const COOKIE: &str = "vern_lang";

/// A language the console speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Norwegian bokmål, the default.
    Nb,
    /// English.
    En,
}

impl Lang {
    /// Every language, in the order the switch offers them.
    pub const ALL: [Lang; 2] = [Lang::Nb, Lang::En];

    /// The BCP 47 code (`<html lang>`, the cookie's value).
    pub fn code(self) -> &'static str {
        match self {
            Lang::Nb => "nb",
            Lang::En => "en",
        }
    }

    /// The language's own name, as the switch shows it.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::Nb => "Norsk bokmål",
            Lang::En => "English",
        }
    }

    /// The language of a code or a language tag (`nb`, `nb-NO`, `no`, `nn`, `en-GB`):
    /// Norwegian in any written form reads bokmål.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "nb" | "no" | "nn" => Some(Lang::Nb),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The person's choice (`cookie`), else the first language of `accept_language`
    /// (by its q-values) that the console speaks, else bokmål.
    pub fn negotiate(cookie: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(lang) = cookie.and_then(Lang::from_tag) {
            return lang;
        }
        let Some(header) = accept_language else {
            return Lang::Nb;
        };
        let mut ranked: Vec<(f32, usize, &str)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut fields = part.split(';');
                let tag = fields.next()?.trim();
                let q = fields
                    .find_map(|f| f.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                (q > 0.0 && !tag.is_empty()).then_some((q, i, tag))
            })
            .collect();
        // Highest q first; among equals, the order the browser gave.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked
            .into_iter()
            .find_map(|(_, _, tag)| Lang::from_tag(tag))
            .unwrap_or(Lang::Nb)
    }

    fn id(self) -> LanguageIdentifier {
        match self {
            Lang::Nb => langid!("nb"),
            Lang::En => langid!("en"),
        }
    }
}

/// Why the catalogs did not load (a build with a broken catalog: caught by the tests).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A catalog does not parse.
    #[error("the {0} catalog does not parse")]
    Parse(&'static str),
    /// A catalog defines a message twice.
    #[error("the {0} catalog defines a message twice")]
    Duplicate(&'static str),
}

/// The console's messages in every language it speaks.
pub struct Catalogs {
    nb: FluentBundle<FluentResource>,
    en: FluentBundle<FluentResource>,
}

impl std::fmt::Debug for Catalogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalogs(nb, en)")
    }
}

const NB: &str = include_str!("../i18n/nb.ftl");
const EN: &str = include_str!("../i18n/en.ftl");

fn bundle(lang: Lang, source: &'static str) -> Result<FluentBundle<FluentResource>, CatalogError> {
    let resource =
        FluentResource::try_new(source.to_owned()).map_err(|_| CatalogError::Parse(lang.code()))?;
    let mut bundle = FluentBundle::new_concurrent(vec![lang.id()]);
    // No Unicode isolation marks around placeables: the pages are plain HTML.
    bundle.set_use_isolating(false);
    bundle
        .add_resource(resource)
        .map_err(|_| CatalogError::Duplicate(lang.code()))?;
    Ok(bundle)
}

impl Catalogs {
    /// Loads the catalogs compiled into the binary.
    pub fn load() -> Result<Self, CatalogError> {
        Ok(Self {
            nb: bundle(Lang::Nb, NB)?,
            en: bundle(Lang::En, EN)?,
        })
    }

    fn of(&self, lang: Lang) -> &FluentBundle<FluentResource> {
        match lang {
            Lang::Nb => &self.nb,
            Lang::En => &self.en,
        }
    }

    /// The message `id` in `lang`, with `args`. A message missing from a catalog (the
    /// parity test keeps that from happening) shows its id, never another language.
    pub fn text(&self, lang: Lang, id: &str, args: Option<&FluentArgs<'_>>) -> String {
        let bundle = self.of(lang);
        let Some(pattern) = bundle.get_message(id).and_then(|m| m.value()) else {
            tracing::warn!(lang = lang.code(), id, "a console message is missing");
            return id.to_owned();
        };
        let mut errors = vec![];
        bundle
            .format_pattern(pattern, args, &mut errors)
            .into_owned()
    }

    /// Whether `lang`'s catalog has the message `id`.
    pub fn has(&self, lang: Lang, id: &str) -> bool {
        self.of(lang).has_message(id)
    }

    /// The ids of every message of `lang`'s catalog.
    pub fn ids(lang: Lang) -> Vec<String> {
        let source = match lang {
            Lang::Nb => NB,
            Lang::En => EN,
        };
        source
            .lines()
            .filter(|l| !l.starts_with(['#', ' ', '\t']) && l.contains(" ="))
            .filter_map(|l| l.split(" =").next())
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogs_load_and_define_the_same_messages() {
        let c = Catalogs::load().expect("catalogs");
        let (mut nb, mut en) = (Catalogs::ids(Lang::Nb), Catalogs::ids(Lang::En));
        nb.sort();
        en.sort();
        assert!(nb.len() > 10, "{nb:?}");
        assert_eq!(nb, en, "every message in both languages");
        for id in &nb {
            assert_ne!(&c.text(Lang::Nb, id, None), id, "{id} in bokmål");
            assert_ne!(&c.text(Lang::En, id, None), id, "{id} in English");
        }
        assert_eq!(c.text(Lang::Nb, "signin-title", None), "Logg inn");
        assert_eq!(c.text(Lang::En, "signin-title", None), "Sign in");
    }

    #[test]
    fn the_switch_wins_then_the_browser_then_bokmal() {
        use Lang::*;
        assert_eq!(Lang::negotiate(None, None), Nb);
        assert_eq!(Lang::negotiate(None, Some("en-GB,en;q=0.9")), En);
        assert_eq!(Lang::negotiate(None, Some("nn-NO,en;q=0.5")), Nb);
        assert_eq!(Lang::negotiate(None, Some("de-DE,en;q=0.8,nb;q=0.9")), Nb);
        assert_eq!(Lang::negotiate(None, Some("de-DE,fr;q=0.8")), Nb);
        assert_eq!(Lang::negotiate(None, Some("en;q=0,nb;q=0.1")), Nb);
        assert_eq!(Lang::negotiate(None, Some("garbage;q=x,en")), En);
        assert_eq!(Lang::negotiate(Some("en"), Some("nb")), En);
        assert_eq!(Lang::negotiate(Some("xx"), Some("en")), En);
    }
}
