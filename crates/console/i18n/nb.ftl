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
dev-signin-title = Utviklerinnlogging
dev-signin-warning = Bare i vern dev: du velger avdeling og rolle selv, og konsollen lager et utviklertoken med utviklernøkkelen. Finnes ikke i en vanlig installasjon.
dev-department = Avdeling (id)
dev-role = Rolle
dev-submit = Logg inn som utvikler
role-tenant-admin = Avdelingsadministrator
role-privacy-officer = Personvernombud
role-auditor = Revisor
field-department-invalid = Skriv avdelingens id: 3–63 små bokstaver, sifre og bindestrek, og begynn med en bokstav (flere: skilt med komma).
field-role-invalid = Velg en av rollene.
signout = Logg ut
signed-in-as = Logget inn som { $role } i { $department }
overview-title = Oversikt
overview-controller = Behandlingsansvarlig
overview-name = Navn
overview-org-number = Organisasjonsnummer
overview-dpo = Personvernombud
overview-authority = Tilsynsmyndighet
overview-none = ikke oppgitt
api-denied = Du har ikke tilgang til dette i avdelingen.
api-not-found = Avdelingen finnes ikke.
api-unavailable = vern svarer ikke akkurat nå. Prøv igjen om litt.
api-other = vern kunne ikke svare på forespørselen.
overview-subjects = Registrerte
subject-state-active = Aktive
subject-state-restricted = Begrenset behandling
subject-state-erased = Slettet
overview-requests = Henvendelser om rettigheter
overview-overdue = { $count } på overtid.
overview-nearest-deadline = Nærmeste frist: { $date } ({ $days ->
    [one] { $days } dag
   *[other] { $days } dager
  }).
overview-no-open-requests = Ingen åpne henvendelser.
overview-status = Status
overview-count = Antall
overview-nearest = Nærmeste frist
overview-closed-requests = Avsluttet: { $count }.
request-status-received = Mottatt
request-status-verified = Identitet bekreftet
request-status-in-progress = Under behandling
request-status-completed = Fullført
request-status-rejected = Avslått
overview-consents = Samtykker per formål
overview-no-consents = Ingen samtykker er registrert ennå.
overview-purpose = Formål
overview-granted = Gitt
overview-withdrawn = Trukket tilbake
overview-retention = Sletting
overview-last-sweep = Siste sletterunde
overview-next-sweep = Neste sletterunde
overview-never = ingen ennå
overview-not-scheduled = ikke planlagt
sweep-running = pågår
sweep-succeeded = fullført
sweep-partial = delvis fullført
sweep-failed = feilet
sweep-skipped-hold = hoppet over: rettslig pålagt bevaring
sweep-interrupted = avbrutt
overview-audit = Revisjonslogg
overview-checkpoint = Siste signerte kontrollpunkt
overview-checkpoint-at = hendelse { $seq }, { $time }
overview-key = Signeringsnøkkel
overview-no-checkpoint = Ingen signerte kontrollpunkt ennå.
department-label = Avdeling
department-switch = Bytt avdeling
signin-idp = Logg inn med kontoen fra organisasjonen din
signin-idp-down = Innloggingstjenesten svarer ikke akkurat nå. Prøv igjen om litt.
signin-cancelled = Innloggingen ble avbrutt eller avvist hos innloggingstjenesten.
signin-no-access = Kontoen din gir deg ingen avdeling eller ingen rolle i denne konsollen. Spør administratoren i avdelingen din.
signin-stale = Denne innloggingen var utløpt eller ble ikke startet her. Start den på nytt.
signedout-title = Logget ut
signedout-text = Du er logget ut av konsollen. Innloggingen hos organisasjonen din avsluttes nå også.
signedout-continue = Gå videre til innloggingstjenesten
api-field-invalid = Ikke godtatt: { $description }
api-field-org-number = Skriv organisasjonsnummeret: ni sifre med gyldig kontrollsiffer.
api-field-dpo-email = Skriv e-postadressen til personvernombudet.
api-field-email = Skriv en gyldig e-postadresse.
api-field-phone = Skriv et gyldig telefonnummer.
api-field-national-id = Skriv et gyldig fødselsnummer (11 sifre).
nav-requests = Henvendelser
queue-title = Henvendelser om rettigheter
queue-caption = Henvendelser, nærmeste frist først
queue-status = Status
queue-type = Type
queue-channel = Kanal
queue-received = Mottatt
queue-due = Frist
queue-left = Tid igjen
queue-all = Alle
queue-overdue-only = Bare forfalte
queue-filter = Vis
queue-empty = Ingen henvendelser passer.
queue-denied = Rollen din kan ikke lese avdelingens henvendelser.
queue-bad-page = Denne siden av listen gjelder ikke lenger. Begynn på nytt fra første side.
queue-pages = Sider
queue-first-page = Første side
queue-next-page = Neste side
queue-days-left = { $days ->
    [0] Frist i dag
    [one] { $days } dag igjen
   *[other] { $days } dager igjen
  }
queue-overdue-by = Forfalt for { $days ->
    [one] { $days } dag
   *[other] { $days } dager
  } siden
queue-closed = Avsluttet
queue-no-deadline = Ingen frist
request-type-access = Innsyn
request-type-rectification = Retting
request-type-erasure = Sletting
request-type-restriction = Begrensning
request-type-objection = Protest
request-type-portability = Dataportabilitet
request-type-withdraw-consent = Tilbaketrekking av samtykke
channel-web-form = Nettskjema
channel-email = E-post
channel-paper = Brev
channel-phone = Telefon
channel-in-person = Oppmøte
channel-api = Integrasjon
channel-unknown = Ikke oppgitt
request-title = Henvendelse
request-back = Alle henvendelser
request-original-due = første frist
request-extension = Forlengelse
request-extended-by = Forlenget med { $months ->
    [one] én måned
   *[other] { $months } måneder
  } (art. 12 nr. 3)
request-pending = Venter på bekreftelse fra
request-id = Henvendelsens id
request-timeline = Tidslinje
request-not-found = Det finnes ingen slik henvendelse i avdelingen.
step-received = Mottatt ({ $channel })
step-verified = Identitet bekreftet: { $method }
step-extended = Den registrerte fikk beskjed om at fristen er forlenget med { $months ->
    [one] én måned
   *[other] { $months } måneder
  }
step-refused = Avvist: { $ground }
step-confirmed = Bekreftet av { $system }
step-fulfilled = Fullført
verify-electronic-id = elektronisk ID
verify-id-document = legitimasjon
verify-email = bekreftelse på e-post
verify-sms = bekreftelse på SMS
verify-in-person = oppmøte
verify-session = innlogget økt
verify-other = annen måte
ground-manifestly-unfounded = åpenbart grunnløs
ground-excessive = urimelig
ground-identity-not-verified = identiteten er ikke bekreftet
ground-legal-exemption = unntak i lov
ground-withdrawn = trukket tilbake av den registrerte
ground-other = andre grunner
request-actions = Handlinger
request-conflict = Noen endret denne henvendelsen etter at du åpnet den. Her er den slik den er nå; ingenting ble endret. Se over og prøv igjen hvis det fortsatt gjelder.
request-form-stale = Dette skjemaet gjelder ikke lenger. Her er henvendelsen slik den er nå.
request-form-invalid = Henvendelsen ble ikke endret: se feltene som er merket nedenfor.
action-verify = Bekreft identitet
action-verify-method = Hvordan identiteten ble bekreftet
action-note = Merknad (ingen personopplysninger)
action-fulfil = Gjennomfør henvendelsen
action-extend = Forleng fristen
action-extend-months = Med
action-extend-reason = Hvorfor det trengs mer tid (art. 12 nr. 3)
action-extend-informed = Den registrerte fikk beskjed
action-refuse = Avvis henvendelsen
action-refuse-ground = Grunnlag
action-refuse-reason = Begrunnelse slik den registrerte får den (de får også vite om retten til å klage til Datatilsynet)
months = { $months ->
    [one] én måned
   *[other] { $months } måneder
  }
api-field-reason = Skriv begrunnelsen: den må være med.
api-field-months = Velg én eller to måneder.
api-field-subject-informed-at = Oppgi datoen den registrerte fikk beskjed: innen den første fristen, og ikke fram i tid.
api-field-ground = Velg et grunnlag.
api-field-method = Velg hvordan identiteten ble bekreftet.
