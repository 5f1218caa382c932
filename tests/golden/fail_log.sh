#errno 5
cd '/www' && rsync '-artuz' '-R' '--no-recursive' '--ignore-times' '--delete-missing-args' '--force' '--password-file=/etc/rsync.pas' '--sockopts=TCP_NODELAY' '--contimeout=10' '--timeout=120' '--dirs' './$(touch pwned)`id`' './-rf' './a b.txt' './badÿutf8' './it'\''s "quoted"' './line
break' 'user@10.0.0.2::mod'

#errno 10
cd '/www' && rsync '-artuz' '-R' '--delete' '--exclude=4913' '--exclude=*~' '--exclude=.#*' '--exclude=.?*.swp' '--exclude=.?*.swx' '--exclude=.?*.swpx' '--exclude=.sersync2-cookie-*' '--exclude=.?*.[0-9A-Z][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9]' '--exclude=.?*.[A-Za-z0-9][0-9A-Z][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9]' '--exclude=.?*.[A-Za-z0-9][A-Za-z0-9][0-9A-Z][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9]' '--exclude=.?*.[A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][0-9A-Z][A-Za-z0-9][A-Za-z0-9]' '--exclude=.?*.[A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][0-9A-Z][A-Za-z0-9]' '--exclude=.?*.[A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][0-9A-Z]' '--password-file=/etc/rsync.pas' '--sockopts=TCP_NODELAY' '--contimeout=10' '--timeout=120' './' 'user@10.0.0.3::mod'

