//! Every human-readable text of a report, one [`Texts`] per language (Art. 12(1): the
//! answer must be intelligible to the subject, who is Norwegian). Nothing else in the
//! crate spells out report wording; the JSON field names and enum value names stay
//! language-neutral (they are an API), only the text changes.
//!
//! The Norwegian texts follow the terms of the Norwegian text of the GDPR
//! (personopplysningsloven, "personvernforordningen"): innsyn, retting, sletting,
//! begrensning av behandlingen (nynorsk: avgrensing av behandlinga),
//! dataportabilitet, protestere, klage til Datatilsynet.

use crate::domain::Language;

/// The texts of one language.
#[derive(Debug)]
pub struct Texts {
    /// Titles by request type, and for an unknown type.
    pub title_access: &'static str,
    /// PORTABILITY.
    pub title_portability: &'static str,
    /// ERASURE.
    pub title_erasure: &'static str,
    /// RECTIFICATION.
    pub title_rectification: &'static str,
    /// RESTRICTION.
    pub title_restriction: &'static str,
    /// OBJECTION.
    pub title_objection: &'static str,
    /// WITHDRAW_CONSENT.
    pub title_withdraw_consent: &'static str,
    /// Any other type.
    pub title_other: &'static str,
    /// Header labels, padded to one width.
    pub label_request: &'static str,
    /// "Produced".
    pub label_produced: &'static str,
    /// "Controller".
    pub label_controller: &'static str,
    /// "org. no.".
    pub org_no: &'static str,
    /// "privacy contact".
    pub privacy_contact: &'static str,
    /// Heading of the identifiers.
    pub heading_identifiers: &'static str,
    /// Identifier labels: e-mail, phone, national id, name.
    pub id_labels: [&'static str; 4],
    /// Heading of the external references.
    pub heading_references: &'static str,
    /// Heading of the data.
    pub heading_data: &'static str,
    /// An empty list.
    pub none_list: &'static str,
    /// Record details.
    pub source: &'static str,
    /// "purposes".
    pub purposes: &'static str,
    /// "collected".
    pub collected: &'static str,
    /// "provided by you".
    pub provided_by_you: &'static str,
    /// "restricted".
    pub restricted: &'static str,
    /// Heading of the purposes.
    pub heading_purposes: &'static str,
    /// Purpose labels, padded to one width.
    pub label_legal_basis: &'static str,
    /// "interest".
    pub label_interest: &'static str,
    /// "categories".
    pub label_categories: &'static str,
    /// "recipients".
    pub label_recipients: &'static str,
    /// "kept".
    pub label_kept: &'static str,
    /// "direct marketing: yes".
    pub direct_marketing_yes: &'static str,
    /// "your consent".
    pub label_consent: &'static str,
    /// Compelling legitimate grounds override the subject's objection (Art. 21(1)).
    pub label_compelling_grounds: &'static str,
    /// No recipients.
    pub no_recipients: &'static str,
    /// "safeguard".
    pub safeguard: &'static str,
    /// A recipient's end: "no longer receives data since".
    pub ended: &'static str,
    /// "Erased records".
    pub erased_records: &'static str,
    /// Heading of records kept after an erasure.
    pub kept_by_law: &'static str,
    /// "until".
    pub until: &'static str,
    /// Label of the automated decision-making statement.
    pub automated_decisions: &'static str,
    /// The statement when there is none.
    pub no_automated_decisions: &'static str,
    /// Heading of the rights.
    pub heading_rights: &'static str,
    /// Lead of the complaint line.
    pub complain_to: &'static str,
    /// The subject's rights; `{authority}` is replaced by the complaint authority.
    pub rights: [&'static str; 10],
    /// Periods: (singular, plural).
    pub year: (&'static str, &'static str),
    /// Months.
    pub month: (&'static str, &'static str),
    /// Weeks.
    pub week: (&'static str, &'static str),
    /// Days.
    pub day: (&'static str, &'static str),
    /// Retention anchors, following a period.
    pub after_collection: &'static str,
    /// END_OF_FINANCIAL_YEAR.
    pub after_financial_year: &'static str,
    /// END_OF_RELATIONSHIP.
    pub after_relationship: &'static str,
    /// CONSENT_WITHDRAWN.
    pub after_withdrawal: &'static str,
    /// A purpose without a rule or summary.
    pub no_fixed_period: &'static str,
    /// Month names, January first.
    pub months: [&'static str; 12],
    /// Date format: `{d}`, `{month}`, `{y}`, `{hm}` are replaced.
    pub date_format: &'static str,
    /// Art. 6(1) legal bases by value name.
    pub legal_bases: [(&'static str, &'static str); 6],
    /// Data categories by value name.
    pub categories: [(&'static str, &'static str); 10],
    /// Recipient roles by JSON value.
    pub roles: [(&'static str, &'static str); 3],
    /// Consent statuses by value name.
    pub consent_statuses: [(&'static str, &'static str); 5],
    /// Transfer safeguards by value name.
    pub safeguards: [(&'static str, &'static str); 4],
}

/// The texts of `lang`.
pub fn of(lang: Language) -> &'static Texts {
    match lang {
        Language::Nb => &NB,
        Language::Nn => &NN,
        Language::En => &EN,
    }
}

/// The subject's rights (Art. 15–22, 7(3), 77) in `lang`, naming `authority`.
pub fn rights(lang: Language, authority: &str) -> Vec<String> {
    of(lang)
        .rights
        .iter()
        .map(|s| s.replace("{authority}", authority))
        .collect()
}

/// Whether `s` is the "no fixed period" wording of some language (so it can be
/// written again in another).
pub fn is_no_fixed_period(s: &str) -> bool {
    [&NB, &NN, &EN].iter().any(|t| t.no_fixed_period == s)
}

/// Whether `s` is the "none" statement on automated decisions (as stored: "none"), or
/// empty.
pub fn is_no_automated_decisions(s: &str) -> bool {
    let s = s.trim();
    s.is_empty()
        || s.eq_ignore_ascii_case(crate::model::NO_AUTOMATED_DECISIONS)
        || [&NB, &NN, &EN]
            .iter()
            .any(|t| t.no_automated_decisions == s)
}

/// The text of a value name in a table, or the name itself.
pub fn lookup<'a>(table: &[(&'static str, &'static str)], name: &'a str) -> &'a str {
    table
        .iter()
        .find(|(k, _)| *k == name)
        .map_or(name, |(_, v)| v)
}

/// Norwegian bokmål.
pub static NB: Texts = Texts {
    title_access: "Innsyn i dine personopplysninger (personvernforordningen artikkel 15)",
    title_portability: "Dine personopplysninger for dataportabilitet (personvernforordningen artikkel 20)",
    title_erasure: "Sletting av dine personopplysninger (personvernforordningen artikkel 17)",
    title_rectification: "Retting av dine personopplysninger (personvernforordningen artikkel 16)",
    title_restriction: "Begrensning av behandlingen (personvernforordningen artikkel 18)",
    title_objection: "Din protest mot behandlingen (personvernforordningen artikkel 21)",
    title_withdraw_consent: "Tilbaketrekking av samtykke (personvernforordningen artikkel 7 nr. 3)",
    title_other: "Svar på din henvendelse om personvernrettigheter",
    label_request: "Henvendelse          ",
    label_produced: "Utarbeidet           ",
    label_controller: "Behandlingsansvarlig ",
    org_no: "org.nr.",
    privacy_contact: "personvernkontakt",
    heading_identifiers: "Opplysninger vi identifiserer deg med",
    id_labels: ["e-post", "telefon", "fødselsnummer", "navn"],
    heading_references: "Referanser til deg i våre systemer",
    heading_data: "Personopplysningene vi behandler om deg",
    none_list: "(ingen)",
    source: "kilde",
    purposes: "formål",
    collected: "innsamlet",
    provided_by_you: "oppgitt av deg",
    restricted: "behandlingen er begrenset",
    heading_purposes: "Hvorfor vi behandler opplysningene",
    label_legal_basis: "behandlingsgrunnlag  ",
    label_interest: "berettiget interesse ",
    label_categories: "kategorier           ",
    label_recipients: "mottakere            ",
    label_kept: "lagringstid          ",
    direct_marketing_yes: "direkte markedsføring: ja",
    label_consent: "ditt samtykke        ",
    label_compelling_grounds: "din protest er vurdert, og vi har tvingende berettigede grunner til å fortsette behandlingen (artikkel 21 nr. 1): ",
    no_recipients: "ingen",
    safeguard: "overføringsgrunnlag",
    ended: "mottar ikke lenger opplysninger fra og med",
    erased_records: "Slettede opplysninger",
    kept_by_law: "Beholdt med begrenset behandling fordi loven krever det:",
    until: "til",
    automated_decisions: "Automatiserte avgjørelser, herunder profilering",
    no_automated_decisions: "ingen",
    heading_rights: "Dine rettigheter",
    complain_to: "Du kan klage til tilsynsmyndigheten",
    rights: [
        "Du har rett til innsyn i personopplysningene vi behandler om deg, og til å få en kopi av dem (artikkel 15).",
        "Du har rett til å få uriktige personopplysninger om deg rettet, og til å få ufullstendige opplysninger supplert (artikkel 16).",
        "Du har rett til sletting av personopplysninger om deg, blant annet når de ikke lenger er nødvendige for formålet, når du trekker tilbake samtykket eller protesterer mot behandlingen, eller når de er behandlet ulovlig (artikkel 17).",
        "Du har rett til å kreve begrensning av behandlingen av personopplysningene dine, for eksempel mens det undersøkes om opplysningene er riktige (artikkel 18).",
        "Vi skal underrette mottakere som har fått opplysningene dine, om retting, sletting og begrensning av behandlingen, og du har rett til å få vite hvem disse mottakerne er (artikkel 19).",
        "Du har rett til dataportabilitet: å få utlevert personopplysninger du selv har gitt oss, og som vi behandler på grunnlag av samtykke eller avtale, i et strukturert, alminnelig anvendt og maskinlesbart format, og til å få dem overført til en annen behandlingsansvarlig (artikkel 20).",
        "Du har rett til å protestere mot behandling som bygger på berettiget interesse eller på en oppgave i allmennhetens interesse eller utøvelse av offentlig myndighet, og du kan alltid protestere mot behandling for direkte markedsføring (artikkel 21).",
        "Du har rett til ikke å være gjenstand for en avgjørelse som utelukkende bygger på automatisert behandling, herunder profilering, dersom avgjørelsen har rettsvirkning for deg eller på lignende måte i betydelig grad påvirker deg (artikkel 22).",
        "Når behandlingen bygger på samtykke, kan du når som helst trekke samtykket tilbake. Det påvirker ikke lovligheten av behandlingen som ble gjort før samtykket ble trukket tilbake (artikkel 7 nr. 3).",
        "Du har rett til å klage til {authority} dersom du mener at behandlingen av personopplysningene dine er i strid med personvernregelverket (artikkel 77).",
    ],
    year: ("år", "år"),
    month: ("måned", "måneder"),
    week: ("uke", "uker"),
    day: ("dag", "dager"),
    after_collection: "etter innsamlingen",
    after_financial_year: "etter utløpet av regnskapsåret",
    after_relationship: "etter at avtaleforholdet er avsluttet",
    after_withdrawal: "etter at samtykket er trukket tilbake eller du har protestert mot behandlingen",
    no_fixed_period: "ingen fast lagringstid: opplysningene lagres bare så lenge det er nødvendig for formålet, og slettes deretter",
    months: [
        "januar",
        "februar",
        "mars",
        "april",
        "mai",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "desember",
    ],
    date_format: "{d}. {month} {y} kl. {hm} (UTC)",
    legal_bases: [
        ("CONSENT", "samtykke (artikkel 6 nr. 1 bokstav a)"),
        ("CONTRACT", "avtale med deg (artikkel 6 nr. 1 bokstav b)"),
        (
            "LEGAL_OBLIGATION",
            "rettslig forpliktelse (artikkel 6 nr. 1 bokstav c)",
        ),
        (
            "VITAL_INTERESTS",
            "vitale interesser (artikkel 6 nr. 1 bokstav d)",
        ),
        (
            "PUBLIC_TASK",
            "oppgave i allmennhetens interesse eller utøvelse av offentlig myndighet (artikkel 6 nr. 1 bokstav e)",
        ),
        (
            "LEGITIMATE_INTERESTS",
            "berettiget interesse (artikkel 6 nr. 1 bokstav f)",
        ),
    ],
    categories: [
        ("CONTACT", "kontaktopplysninger"),
        ("IDENTITY", "identitetsopplysninger"),
        ("EMPLOYMENT", "opplysninger om arbeidsforhold"),
        ("DEMOGRAPHIC", "demografiske opplysninger"),
        ("BEHAVIOUR", "opplysninger om atferd og bruk"),
        ("COMMUNICATIONS", "kommunikasjon"),
        ("PREFERENCES", "preferanser"),
        ("FINANCIAL", "økonomiske opplysninger"),
        ("ABSENCE", "fravær"),
        ("HEALTH", "helseopplysninger"),
    ],
    roles: [
        ("processor", "databehandler"),
        ("controller", "behandlingsansvarlig"),
        ("authority", "offentlig myndighet"),
    ],
    consent_statuses: [
        ("GRANTED", "gitt"),
        ("WITHDRAWN", "trukket tilbake"),
        ("OBJECTED", "du har protestert"),
        ("EXPIRED", "utløpt"),
        ("NOT_RECORDED", "ikke registrert"),
    ],
    safeguards: [
        (
            "ADEQUACY_DECISION",
            "beslutning om tilstrekkelig beskyttelsesnivå (artikkel 45)",
        ),
        (
            "STANDARD_CONTRACTUAL_CLAUSES",
            "standard personvernbestemmelser (artikkel 46)",
        ),
        (
            "BINDING_CORPORATE_RULES",
            "bindende virksomhetsregler (artikkel 47)",
        ),
        ("DEROGATION", "unntak for særlige situasjoner (artikkel 49)"),
    ],
};

/// Norwegian nynorsk.
pub static NN: Texts = Texts {
    title_access: "Innsyn i personopplysningane dine (personvernforordninga artikkel 15)",
    title_portability: "Personopplysningane dine for dataportabilitet (personvernforordninga artikkel 20)",
    title_erasure: "Sletting av personopplysningane dine (personvernforordninga artikkel 17)",
    title_rectification: "Retting av personopplysningane dine (personvernforordninga artikkel 16)",
    title_restriction: "Avgrensing av behandlinga (personvernforordninga artikkel 18)",
    title_objection: "Protesten din mot behandlinga (personvernforordninga artikkel 21)",
    title_withdraw_consent: "Tilbaketrekking av samtykke (personvernforordninga artikkel 7 nr. 3)",
    title_other: "Svar på førespurnaden din om personvernrettar",
    label_request: "Førespurnad           ",
    label_produced: "Utarbeidd             ",
    label_controller: "Behandlingsansvarleg  ",
    org_no: "org.nr.",
    privacy_contact: "personvernkontakt",
    heading_identifiers: "Opplysningar vi identifiserer deg med",
    id_labels: ["e-post", "telefon", "fødselsnummer", "namn"],
    heading_references: "Referansar til deg i systema våre",
    heading_data: "Personopplysningane vi behandlar om deg",
    none_list: "(ingen)",
    source: "kjelde",
    purposes: "føremål",
    collected: "samla inn",
    provided_by_you: "gitt av deg",
    restricted: "behandlinga er avgrensa",
    heading_purposes: "Kvifor vi behandlar opplysningane",
    label_legal_basis: "behandlingsgrunnlag   ",
    label_interest: "berettiga interesse   ",
    label_categories: "kategoriar            ",
    label_recipients: "mottakarar            ",
    label_kept: "lagringstid           ",
    direct_marketing_yes: "direkte marknadsføring: ja",
    label_consent: "samtykket ditt        ",
    label_compelling_grounds: "protesten din er vurdert, og vi har tvingande, rettkomne grunnar til å halde fram med behandlinga (artikkel 21 nr. 1): ",
    no_recipients: "ingen",
    safeguard: "overføringsgrunnlag",
    ended: "får ikkje lenger opplysningar frå og med",
    erased_records: "Sletta opplysningar",
    kept_by_law: "Tekne vare på med avgrensa behandling fordi lova krev det:",
    until: "til",
    automated_decisions: "Automatiserte avgjerder, medrekna profilering",
    no_automated_decisions: "ingen",
    heading_rights: "Rettane dine",
    complain_to: "Du kan klage til tilsynsstyresmakta",
    rights: [
        "Du har rett til innsyn i personopplysningane vi behandlar om deg, og til å få ein kopi av dei (artikkel 15).",
        "Du har rett til å få retta uriktige personopplysningar om deg, og til å få supplert ufullstendige opplysningar (artikkel 16).",
        "Du har rett til sletting av personopplysningar om deg, mellom anna når dei ikkje lenger er naudsynte for føremålet, når du trekkjer tilbake samtykket eller protesterer mot behandlinga, eller når dei er behandla ulovleg (artikkel 17).",
        "Du har rett til å krevje avgrensing av behandlinga av personopplysningane dine, til dømes medan det blir undersøkt om opplysningane er riktige (artikkel 18).",
        "Vi skal varsle mottakarar som har fått opplysningane dine, om retting, sletting og avgrensing av behandlinga, og du har rett til å få vite kven desse mottakarane er (artikkel 19).",
        "Du har rett til dataportabilitet: å få utlevert personopplysningar du sjølv har gitt oss, og som vi behandlar på grunnlag av samtykke eller avtale, i eit strukturert, alminneleg brukt og maskinlesbart format, og til å få dei overførte til ein annan behandlingsansvarleg (artikkel 20).",
        "Du har rett til å protestere mot behandling som byggjer på berettiga interesse eller på ei oppgåve i ålmenta si interesse eller utøving av offentleg styresmakt, og du kan alltid protestere mot behandling for direkte marknadsføring (artikkel 21).",
        "Du har rett til ikkje å vere gjenstand for ei avgjerd som berre byggjer på automatisert behandling, medrekna profilering, dersom avgjerda har rettsverknad for deg eller på liknande måte påverkar deg i monaleg grad (artikkel 22).",
        "Når behandlinga byggjer på samtykke, kan du når som helst trekkje samtykket tilbake. Det påverkar ikkje om behandlinga som vart gjord før samtykket vart trekt tilbake, var lovleg (artikkel 7 nr. 3).",
        "Du har rett til å klage til {authority} dersom du meiner at behandlinga av personopplysningane dine er i strid med personvernregelverket (artikkel 77).",
    ],
    year: ("år", "år"),
    month: ("månad", "månader"),
    week: ("veke", "veker"),
    day: ("dag", "dagar"),
    after_collection: "etter innsamlinga",
    after_financial_year: "etter utgangen av rekneskapsåret",
    after_relationship: "etter at avtaletilhøvet er avslutta",
    after_withdrawal: "etter at samtykket er trekt tilbake eller du har protestert mot behandlinga",
    no_fixed_period: "inga fast lagringstid: opplysningane blir lagra berre så lenge det er naudsynt for føremålet, og blir sletta etterpå",
    months: [
        "januar",
        "februar",
        "mars",
        "april",
        "mai",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "desember",
    ],
    date_format: "{d}. {month} {y} kl. {hm} (UTC)",
    legal_bases: [
        ("CONSENT", "samtykke (artikkel 6 nr. 1 bokstav a)"),
        ("CONTRACT", "avtale med deg (artikkel 6 nr. 1 bokstav b)"),
        (
            "LEGAL_OBLIGATION",
            "rettsleg plikt (artikkel 6 nr. 1 bokstav c)",
        ),
        (
            "VITAL_INTERESTS",
            "vitale interesser (artikkel 6 nr. 1 bokstav d)",
        ),
        (
            "PUBLIC_TASK",
            "oppgåve i ålmenta si interesse eller utøving av offentleg styresmakt (artikkel 6 nr. 1 bokstav e)",
        ),
        (
            "LEGITIMATE_INTERESTS",
            "berettiga interesse (artikkel 6 nr. 1 bokstav f)",
        ),
    ],
    categories: [
        ("CONTACT", "kontaktopplysningar"),
        ("IDENTITY", "identitetsopplysningar"),
        ("EMPLOYMENT", "opplysningar om arbeidsforhold"),
        ("DEMOGRAPHIC", "demografiske opplysningar"),
        ("BEHAVIOUR", "opplysningar om åtferd og bruk"),
        ("COMMUNICATIONS", "kommunikasjon"),
        ("PREFERENCES", "preferansar"),
        ("FINANCIAL", "økonomiske opplysningar"),
        ("ABSENCE", "fråvær"),
        ("HEALTH", "helseopplysningar"),
    ],
    roles: [
        ("processor", "databehandlar"),
        ("controller", "behandlingsansvarleg"),
        ("authority", "offentleg styresmakt"),
    ],
    consent_statuses: [
        ("GRANTED", "gitt"),
        ("WITHDRAWN", "trekt tilbake"),
        ("OBJECTED", "du har protestert"),
        ("EXPIRED", "gått ut"),
        ("NOT_RECORDED", "ikkje registrert"),
    ],
    safeguards: [
        (
            "ADEQUACY_DECISION",
            "avgjerd om tilstrekkeleg vernenivå (artikkel 45)",
        ),
        (
            "STANDARD_CONTRACTUAL_CLAUSES",
            "standard personvernføresegner (artikkel 46)",
        ),
        (
            "BINDING_CORPORATE_RULES",
            "bindande verksemdsreglar (artikkel 47)",
        ),
        ("DEROGATION", "unntak for særlege situasjonar (artikkel 49)"),
    ],
};

/// English.
pub static EN: Texts = Texts {
    title_access: "Access to your personal data (GDPR Art. 15)",
    title_portability: "Your data for portability (GDPR Art. 20)",
    title_erasure: "Erasure of your personal data (GDPR Art. 17)",
    title_rectification: "Rectification of your personal data (GDPR Art. 16)",
    title_restriction: "Restriction of processing (GDPR Art. 18)",
    title_objection: "Your objection to processing (GDPR Art. 21)",
    title_withdraw_consent: "Withdrawal of consent (GDPR Art. 7(3))",
    title_other: "Rights request report",
    label_request: "Request      ",
    label_produced: "Produced     ",
    label_controller: "Controller   ",
    org_no: "org. no.",
    privacy_contact: "privacy contact",
    heading_identifiers: "Your identifiers",
    id_labels: ["e-mail", "phone", "national id", "name"],
    heading_references: "References in our systems",
    heading_data: "The personal data we hold about you",
    none_list: "(none)",
    source: "source",
    purposes: "purposes",
    collected: "collected",
    provided_by_you: "provided by you",
    restricted: "restricted",
    heading_purposes: "Why we process it",
    label_legal_basis: "legal basis      ",
    label_interest: "interest         ",
    label_categories: "categories       ",
    label_recipients: "recipients       ",
    label_kept: "kept             ",
    direct_marketing_yes: "direct marketing: yes",
    label_consent: "your consent     ",
    label_compelling_grounds: "your objection was assessed and we have compelling legitimate grounds to continue processing (Art. 21(1)): ",
    no_recipients: "none",
    safeguard: "safeguard",
    ended: "no longer receives data since",
    erased_records: "Erased records",
    kept_by_law: "Kept, with processing restricted, because the law requires it:",
    until: "until",
    automated_decisions: "Automated decision-making, including profiling",
    no_automated_decisions: "none",
    heading_rights: "Your rights",
    complain_to: "You may complain to the supervisory authority",
    rights: [
        "You have the right of access to the personal data we process about you and to receive a copy of it (Art. 15).",
        "You have the right to have inaccurate personal data about you rectified and incomplete data completed (Art. 16).",
        "You have the right to have your personal data erased where it is no longer needed, you withdraw consent or object, or it was processed unlawfully (Art. 17).",
        "You have the right to have processing of your personal data restricted, e.g. while its accuracy is contested (Art. 18).",
        "We notify the recipients of your data of any rectification, erasure or restriction, and you have the right to be told who they are (Art. 19).",
        "You have the right to receive the personal data you provided, processed under consent or contract, in a structured, machine-readable format and to have it sent to another controller (Art. 20).",
        "You have the right to object to processing based on legitimate interests or a public task, and always to direct marketing (Art. 21).",
        "You have the right not to be subject to a decision based solely on automated processing, including profiling, which produces legal effects concerning you or similarly significantly affects you (Art. 22).",
        "Where processing is based on consent, you may withdraw your consent at any time without affecting the lawfulness of processing before the withdrawal (Art. 7(3)).",
        "You have the right to lodge a complaint with {authority} if you consider that the processing of your personal data infringes data protection law (Art. 77).",
    ],
    year: ("year", "years"),
    month: ("month", "months"),
    week: ("week", "weeks"),
    day: ("day", "days"),
    after_collection: "after collection",
    after_financial_year: "after the end of the financial year",
    after_relationship: "after the end of the relationship",
    after_withdrawal: "after consent is withdrawn or an objection is made",
    no_fixed_period: "no fixed period: kept only as long as necessary for the purpose, then deleted",
    months: [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    date_format: "{d} {month} {y}, {hm} UTC",
    legal_bases: [
        ("CONSENT", "consent (Art. 6(1)(a))"),
        ("CONTRACT", "contract with you (Art. 6(1)(b))"),
        ("LEGAL_OBLIGATION", "legal obligation (Art. 6(1)(c))"),
        ("VITAL_INTERESTS", "vital interests (Art. 6(1)(d))"),
        (
            "PUBLIC_TASK",
            "task in the public interest or official authority (Art. 6(1)(e))",
        ),
        (
            "LEGITIMATE_INTERESTS",
            "legitimate interests (Art. 6(1)(f))",
        ),
    ],
    categories: [
        ("CONTACT", "contact details"),
        ("IDENTITY", "identity"),
        ("EMPLOYMENT", "employment"),
        ("DEMOGRAPHIC", "demographic data"),
        ("BEHAVIOUR", "behaviour and usage"),
        ("COMMUNICATIONS", "communications"),
        ("PREFERENCES", "preferences"),
        ("FINANCIAL", "financial data"),
        ("ABSENCE", "absence"),
        ("HEALTH", "health data"),
    ],
    roles: [
        ("processor", "processor"),
        ("controller", "controller"),
        ("authority", "public authority"),
    ],
    consent_statuses: [
        ("GRANTED", "given"),
        ("WITHDRAWN", "withdrawn"),
        ("OBJECTED", "you objected"),
        ("EXPIRED", "expired"),
        ("NOT_RECORDED", "not recorded"),
    ],
    safeguards: [
        ("ADEQUACY_DECISION", "adequacy decision (Art. 45)"),
        (
            "STANDARD_CONTRACTUAL_CLAUSES",
            "standard contractual clauses (Art. 46)",
        ),
        (
            "BINDING_CORPORATE_RULES",
            "binding corporate rules (Art. 47)",
        ),
        (
            "DEROGATION",
            "derogation for a specific situation (Art. 49)",
        ),
    ],
};
