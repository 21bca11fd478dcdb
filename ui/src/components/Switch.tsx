/** An accessible on/off switch (a checkbox styled as a toggle). */
export function Switch(props: {
  checked: boolean;
  onChange: (v: boolean) => void;
  label: string;
  testid: string;
  disabled?: boolean;
  showLabel?: boolean;
}) {
  return (
    <label class={`switch${props.disabled ? ' disabled' : ''}`}>
      {props.showLabel !== false && <span class="switch-label">{props.label}</span>}
      <input type="checkbox" role="switch" data-testid={props.testid} checked={props.checked} disabled={props.disabled}
        aria-label={props.label} onChange={(e) => props.onChange(e.currentTarget.checked)} />
      <span class="switch-track" aria-hidden="true"><span class="switch-thumb" /></span>
    </label>
  );
}
