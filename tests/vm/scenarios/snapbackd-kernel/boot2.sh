# Boot 2: the cancelled rollback left the upgraded trees and the snapshot in place. Schedule the
# rollback again while "/" is mounted, then reboot.
. /scenario/lib.sh
write_config; keep_load
check activate snapbackd activate --config /etc/snapback/snapback.toml
check_eq cancel-kept-snapshot snapshot-origin "$(target_of root)"
mount_vol root; mount_vol var
check_eq cancel-kept-upgraded-root "$(cat /tmp/keep/root-v2)" "$(manifest /mnt/root)"
check_eq cancel-kept-upgraded-var "$(cat /tmp/keep/var-v2)" "$(manifest /mnt/var)"
umount /mnt/var   # one busy and one idle volume: the set is still scheduled as a whole
start_bus
start_daemon
check start-daemon owns_name
check_eq state-active-after-reboot active "$(state 2)"
check_eq rollback-scheduled-again 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/2 0)"
check_eq var-not-merged-alone snapshot-origin "$(target_of var)"
# a scheduled rollback is never dropped by a Delete: cancel it first
check delete-of-scheduled-is-refused sh -c "! busctl call $BUS $MGR $BUS.Manager Delete o $SNAP/2"
check_eq still-scheduled-after-refused-delete merge-scheduled "$(state 2)"
# snapbackd restarting while "/" is mounted must not start the merge under the filesystem
stop_daemon
start_daemon
check restart-with-root-mounted owns_name
check_eq restart-leaves-root-unmerged snapshot-origin "$(target_of root)"
check_eq restart-leaves-var-unmerged snapshot-origin "$(target_of var)"
check_eq restart-keeps-it-scheduled merge-scheduled "$(state 2)"
check_eq root-unchanged-after-restart "$(cat /tmp/keep/root-v2)" "$(manifest /mnt/root)"
stop_daemon
umount /mnt/root
