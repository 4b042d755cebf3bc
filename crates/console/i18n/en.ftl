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
