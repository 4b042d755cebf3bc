# English.
app-name = vern
skip-to-content = Skip to content
nav-label = Main menu
nav-overview = Overview
language-label = Language
language-switch = Change language
signin-title = Sign in
signin-lede = The console is for your department's admins, privacy officers and auditors. Sign in with the account your organisation gave you.
signin-none = No way to sign in is set up for this console. Ask the platform team to set up OpenID Connect.
footer-text = vern keeps personal data lawful for every department as its own controller.
error-title = Something went wrong
error-not-found = There is no such page.
error-forbidden = The request did not come from this console and was refused.
dev-signin-title = Development sign-in
dev-signin-warning = Only in vern dev: you choose the department and role yourself, and the console makes a development token with the development key. It does not exist in a real installation.
dev-department = Department (id)
dev-role = Role
dev-submit = Sign in as a developer
role-tenant-admin = Department admin
role-privacy-officer = Privacy officer
role-auditor = Auditor
field-department-invalid = Enter the department's id: 3–63 lower-case letters, digits and hyphens, starting with a letter (several: separated by commas).
field-role-invalid = Choose one of the roles.
signout = Sign out
signed-in-as = Signed in as { $role } in { $department }
overview-title = Overview
overview-controller = Controller
overview-name = Name
overview-org-number = Organisation number
overview-dpo = Data protection officer
overview-authority = Supervisory authority
overview-none = not given
api-denied = You may not see this in the department.
api-not-found = The department does not exist.
api-unavailable = vern is not answering just now. Try again shortly.
api-other = vern could not answer the request.
overview-subjects = Data subjects
subject-state-active = Active
subject-state-restricted = Restricted
subject-state-erased = Erased
overview-requests = Rights requests
overview-overdue = { $count } overdue.
overview-nearest-deadline = Nearest deadline: { $date } ({ $days ->
    [one] { $days } day
   *[other] { $days } days
  }).
overview-no-open-requests = No open requests.
overview-status = Status
overview-count = Count
overview-nearest = Nearest deadline
overview-closed-requests = Closed: { $count }.
request-status-received = Received
request-status-verified = Identity verified
request-status-in-progress = In progress
request-status-completed = Completed
request-status-rejected = Refused
overview-consents = Consents per purpose
overview-no-consents = No consent has been recorded yet.
overview-purpose = Purpose
overview-granted = Given
overview-withdrawn = Withdrawn
overview-retention = Retention
overview-last-sweep = Last sweep
overview-next-sweep = Next sweep
overview-never = none yet
overview-not-scheduled = not scheduled
sweep-running = running
sweep-succeeded = succeeded
sweep-partial = partly done
sweep-failed = failed
sweep-skipped-hold = skipped: a legal hold is in force
sweep-interrupted = interrupted
overview-audit = Audit log
overview-checkpoint = Latest signed checkpoint
overview-checkpoint-at = event { $seq }, { $time }
overview-key = Signing key
overview-no-checkpoint = No signed checkpoint yet.
department-label = Department
department-switch = Switch department
signin-idp = Sign in with your organisation's account
signin-idp-down = The sign-in service is not answering just now. Try again shortly.
signin-cancelled = The sign-in was cancelled or refused at the sign-in service.
signin-no-access = Your account gives you no department or no role in this console. Ask your department's admin.
signin-stale = This sign-in had expired or was not started here. Start it again.
signedout-title = Signed out
signedout-text = You are signed out of the console. Your sign-in at your organisation now ends too.
signedout-continue = Continue to the sign-in service
api-field-invalid = Not accepted: { $description }
api-field-org-number = Enter the organisation number: nine digits with a valid check digit.
api-field-dpo-email = Enter the data protection officer's e-mail address.
api-field-email = Enter a valid e-mail address.
api-field-phone = Enter a valid phone number.
api-field-national-id = Enter a valid national identity number (11 digits).
nav-requests = Requests
queue-title = Rights requests
queue-caption = Requests, nearest deadline first
queue-status = Status
queue-type = Type
queue-channel = Channel
queue-received = Received
queue-due = Deadline
queue-left = Time left
queue-all = All
queue-overdue-only = Overdue only
queue-filter = Show
queue-empty = No requests match.
queue-denied = Your role may not read the department's requests.
queue-bad-page = This page of the list is no longer valid. Start again from the first page.
queue-pages = Pages
queue-first-page = First page
queue-next-page = Next page
queue-days-left = { $days ->
    [0] Due today
    [one] { $days } day left
   *[other] { $days } days left
  }
queue-overdue-by = Overdue by { $days ->
    [one] { $days } day
   *[other] { $days } days
  }
queue-closed = Closed
queue-no-deadline = No deadline
request-type-access = Access
request-type-rectification = Rectification
request-type-erasure = Erasure
request-type-restriction = Restriction
request-type-objection = Objection
request-type-portability = Data portability
request-type-withdraw-consent = Withdrawal of consent
channel-web-form = Web form
channel-email = E-mail
channel-paper = Letter
channel-phone = Phone
channel-in-person = In person
channel-api = Integration
channel-unknown = Not given
request-title = Request
request-back = All requests
request-original-due = first deadline
request-extension = Extension
request-extended-by = Extended by { $months ->
    [one] one month
   *[other] { $months } months
  } (Art. 12(3))
request-pending = Waiting for confirmation from
request-id = Request id
request-timeline = Timeline
request-not-found = There is no such request in the department.
step-received = Received ({ $channel })
step-verified = Identity verified: { $method }
step-extended = The person was told the deadline is extended by { $months ->
    [one] one month
   *[other] { $months } months
  }
step-refused = Refused: { $ground }
step-confirmed = Confirmed by { $system }
step-fulfilled = Fulfilled
verify-electronic-id = electronic ID
verify-id-document = identity document
verify-email = e-mail confirmation
verify-sms = SMS confirmation
verify-in-person = in person
verify-session = signed-in session
verify-other = other means
ground-manifestly-unfounded = manifestly unfounded
ground-excessive = excessive
ground-identity-not-verified = identity not verified
ground-legal-exemption = legal exemption
ground-withdrawn = withdrawn by the person
ground-other = other grounds
request-actions = Actions
request-conflict = Someone changed this request after you opened it. Here it is as it is now; nothing was changed. Check it and try again if it still applies.
request-form-stale = This form is no longer valid. Here is the request as it is now.
request-form-invalid = The request was not changed: see the fields marked below.
action-verify = Verify identity
action-verify-method = How the identity was verified
action-note = Note (no personal data)
action-fulfil = Fulfil the request
action-extend = Extend the deadline
action-extend-months = By
action-extend-reason = Why more time is needed (Art. 12(3))
action-extend-informed = The person was told on
action-refuse = Refuse the request
action-refuse-ground = Ground
action-refuse-reason = Reason, as the person is told it (they are also told of the right to complain to Datatilsynet)
months = { $months ->
    [one] one month
   *[other] { $months } months
  }
api-field-reason = Give the reason: it is required.
api-field-months = Choose one or two months.
api-field-subject-informed-at = Give the date the person was told: within the first deadline, and not in the future.
api-field-ground = Choose a ground.
api-field-method = Choose how the identity was verified.
