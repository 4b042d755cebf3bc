# Bokmål, the console's default language.
app-name = vern
skip-to-content = Gå til innholdet
nav-label = Hovedmeny
nav-overview = Oversikt
language-label = Språk
language-switch = Bytt språk
signin-title = Logg inn
signin-lede = Konsollen er for avdelingens administratorer, personvernombud og revisorer. Du logger inn med kontoen organisasjonen din har gitt deg.
signin-none = Ingen innloggingsmåte er satt opp for denne konsollen. Be plattformteamet sette opp OpenID Connect.
footer-text = vern holder personopplysninger lovlige for hver avdeling som behandlingsansvarlig.
error-title = Noe gikk galt
error-not-found = Siden finnes ikke.
error-forbidden = Forespørselen kom ikke fra denne konsollen og ble avvist.
