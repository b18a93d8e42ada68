#!/usr/bin/perl
# A classic CGI contact form in Perl (docs/cgi.md, "Classic CGI scripts"):
# GET shows the form, POST mails it through /usr/sbin/sendmail -t. Inside
# the box that sendmail is the suite's: it sends only to forms.recipients
# of config/tenants/example.test.yaml (no To: line: the first of them),
# rate-limited, through the durable queue.
use strict;
use warnings;

sub decode { my $s = shift // ''; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; return $s; }
sub oneline { my $s = shift // ''; $s =~ s/[\r\n\t]+/ /g; return substr($s, 0, 200); }

if (($ENV{REQUEST_METHOD} || 'GET') ne 'POST') {
  print "Content-Type: text/html; charset=utf-8\r\n\r\n";
  print <<'HTML';
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Contact (Perl)</title><link rel="stylesheet" href="/style.css"></head>
<body>
  <header><h1>Contact</h1><nav><a href="/">Home</a><a href="/contact.html">FormMail version</a></nav></header>
  <form method="post" action="/cgi-bin/contact.pl">
    <p><label>Your name <input name="name" required></label></p>
    <p><label>Your e-mail <input name="email" type="email" required></label></p>
    <p><label>Message<br><textarea name="message" rows="6" cols="50" required></textarea></label></p>
    <p class="hp" aria-hidden="true"><label>Leave this empty <input name="homepage" tabindex="-1" autocomplete="off"></label></p>
    <p><button>Send</button></p>
  </form>
  <footer>Hosted by makewaves.</footer>
</body>
</html>
HTML
  exit 0;
}

my $body = '';
read(STDIN, $body, $ENV{CONTENT_LENGTH} || 0);
my %f;
for my $pair (split /&/, $body) {
  my ($k, $v) = split /=/, $pair, 2;
  $f{decode($k)} = decode($v);
}
# The honeypot filled in: a robot. Thank it, send nothing.
if (length($f{homepage} // '')) { print "Location: /thanks.html\r\n\r\n"; exit 0; }
my $message = $f{message} // '';
if ($message !~ /\S/) { print "Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nPlease write a message.\n"; exit 0; }
my $name = oneline($f{name});
my $email = oneline($f{email});

open(my $mail, '|-', '/usr/sbin/sendmail', '-t', '-oi') or die "cannot start sendmail: $!";
print $mail "Reply-To: $email\n" if $email =~ /^[^\s\@<>]+\@[^\s\@<>]+\.[^\s\@<>]+$/;
print $mail "Subject: Message from $name (contact.pl)\n\n";
print $mail "Name: $name\nE-mail: $email\n\n$message\n";
close($mail) or die "sendmail failed: $?";
print "Location: /thanks.html\r\n\r\n";
