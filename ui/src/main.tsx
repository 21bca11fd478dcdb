/** Entry point of the desktop app's window (built into ui/dist). */
import './styles.css';
import { boot } from './boot';

boot(document.getElementById('app')!);
