"""Job programs the lifecycle tests share."""

# Counts a step every 50 ms, saying how far it got in $PROGRESS (default ./progress); on
# SIGUSR1 saves its count in $SANDRUN_CHECKPOINT_DIR and exits 85. Started from nothing it
# counts until it is asked; from a checkpoint, 10 more, and ends. Each attempt says where
# it started ("attempt N starts at C"), and the last line is "count=C".
COUNTER = """
D="$SANDRUN_CHECKPOINT_DIR"
n=$(cat "$D/count" 2>/dev/null || echo 0)
echo "attempt $SANDRUN_ATTEMPT starts at $n"
trap 'echo $n > "$D/count"; exit 85' USR1
end=$((n+10))
while [ "$end" = 10 ] || [ "$n" -lt "$end" ]; do
  n=$((n+1)); echo "$n" > "${PROGRESS:-progress}"; sleep 0.05
done
echo "count=$n"
"""
